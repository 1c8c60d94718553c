"""Model tests run single-threaded: their tensors are tiny, and on a shared machine torch's
intra-op threads contend for the cores. Scoped to tests/models; the setting is restored after."""

from __future__ import annotations

import pytest

from tests.conftest import one_thread


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with one_thread():
        yield
