"""TensorLoader never changes what it batches: uint8 and float inputs, shuffled or not."""

from __future__ import annotations

import pytest
import torch

from fastlab.data.images.bunch import TensorLoader, channel_stats


def _inputs(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (10, 3, 4, 4), generator=g, dtype=torch.uint8)  # (N, C, H, W)
    return x if dtype == torch.uint8 else x.to(dtype) / 255.0


def _passes(loader: TensorLoader, n: int = 2) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    return [[(xb.clone(), yb.clone()) for xb, yb in loader] for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("stats", [True, False])
def test_valid_loader_twice_gives_the_same_batches_and_leaves_x_unchanged(dtype, stats):
    x, y = _inputs(dtype), torch.arange(10)
    before = x.clone()
    mean, std = (torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])) if stats else (None, None)
    if dtype == torch.uint8 and not stats:
        mean, std = torch.zeros(3), torch.ones(3)  # uint8 images always carry statistics
    loader = TensorLoader(x, y, bs=4, mean=mean, std=std)  # unshuffled: batches are views of x
    first, second = _passes(loader)
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert x1.dtype == torch.float32
    assert torch.equal(x, before) and torch.equal(y, torch.arange(10))


def test_float_inputs_are_taken_as_they_are_and_uint8_scaled():
    x = _inputs(torch.float32)
    out = torch.cat([xb for xb, _ in TensorLoader(x, torch.arange(10), bs=4)])
    assert torch.equal(out, x)
    xu = _inputs(torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    out = torch.cat([xb for xb, _ in TensorLoader(xu, torch.arange(10), bs=4, mean=mean, std=std)])
    assert torch.allclose(out, (xu.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_a_batch_changed_by_its_consumer_does_not_reach_the_stored_tensor():
    x = _inputs(torch.float32)
    before = x.clone()
    for xb, _ in TensorLoader(x, torch.arange(10), bs=4):
        xb.mul_(0)  # e.g. an augmentation callback working in place
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shuffled_loader_leaves_x_unchanged_and_is_seeded(dtype):
    x = _inputs(dtype)
    before = x.clone()

    def order(seed):
        loader = TensorLoader(x, torch.arange(10), bs=4, mean=torch.zeros(3), std=torch.ones(3), shuffle=True,
                              drop_last=True, generator=torch.Generator().manual_seed(seed))
        return [yb.tolist() for _, yb in loader]

    assert order(1) == order(1) != order(2)
    assert torch.equal(x, before)


def test_channel_stats_leave_float_images_unchanged():
    x = _inputs(torch.float32)
    before = x.clone()
    mean, std = channel_stats(x)
    assert torch.equal(x, before)
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert channel_stats(_inputs(torch.uint8))[0] == pytest.approx(mean, abs=1e-6)
