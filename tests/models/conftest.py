"""Model tests run single-threaded: their tensors are tiny, and on a shared machine torch's
intra-op threads contend for the cores (a 12-unit LSTM step then takes tens of milliseconds
instead of microseconds). Scoped to tests/models; the previous setting is restored."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
