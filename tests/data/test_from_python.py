"""DataBunch.from_tensors and DataBunch.from_loaders: what they accept, refuse and hand the Learner."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fastlab.data import DataBunch, LoaderBunch
from fastlab.errors import DataError


def _images(n: int, dtype=torch.uint8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # (N, C, H, W)
    return x if dtype == torch.uint8 else x.to(dtype) / 255.0


def test_from_tensors_uint8_images_are_scaled_and_normalised_with_training_stats():
    x, y = _images(30), torch.arange(30) % 3
    data = DataBunch.from_tensors(x[:20], y[:20], x[20:], y[20:], bs=8)
    assert (data.c, data.classes, data.size, data.n_channels) == (3, ["0", "1", "2"], 8, 1)
    assert len(data.train) == 2 and len(data.valid) == 1  # ragged last training batch dropped
    xb, yb = next(iter(data.valid))
    mean, std = data.mean[0], data.std[0]
    assert torch.allclose(xb, (x[20:].float() / 255 - mean) / std) and yb.dtype == torch.long
    assert data.meta()["mean"] == [mean] and data.train_items[0] == "train/0"


def test_from_tensors_float_inputs_are_used_as_they_are_unless_stats_are_given():
    x, y = _images(30, torch.float32), torch.arange(30) % 3
    data = DataBunch.from_tensors(x[:20], y[:20], x[20:], y[20:], bs=8, classes=["a", "b", "c"])
    assert data.mean is None and data.classes == ["a", "b", "c"]
    assert torch.equal(torch.cat([xb for xb, _ in data.valid]), x[20:])
    normed = DataBunch.from_tensors(x[:20], y[:20], x[20:], y[20:], bs=8, mean=[0.5], std=[0.25])
    assert torch.allclose(next(iter(normed.valid))[0], (x[20:] - 0.5) / 0.25)


def test_from_tensors_takes_features_and_float_targets():
    x, y = torch.randn(40, 5), torch.randn(40, 2)  # (N, F) features, (N, k) regression targets
    data = DataBunch.from_tensors(x[:30], y[:30], x[30:], y[30:], bs=10)
    assert (data.c, data.classes, data.size) == (2, None, None)
    xb, yb = next(iter(data.valid))
    assert torch.equal(xb, x[30:]) and torch.equal(yb, y[30:])


def test_from_tensors_shuffles_from_its_seed():
    x, y = _images(40), torch.arange(40) % 4

    def order(seed):
        data = DataBunch.from_tensors(x[:32], y[:32], x[32:], y[32:], bs=8, seed=seed)
        return [xb.sum().item() for xb, _ in data.train]

    assert order(3) == order(3) != order(4)


@pytest.mark.parametrize(("args", "message"), [
    ((_images(4), torch.arange(3), _images(2), torch.arange(2)), "3 targets for 4 inputs"),
    ((_images(4).view(4, 64), torch.arange(4), _images(2).view(2, 64), torch.arange(2)), "uint8 means images"),
    ((_images(4), torch.arange(4), _images(2, torch.float32), torch.arange(2)), "same kind of inputs"),
    ((_images(4).int(), torch.arange(4), _images(2).int(), torch.arange(2)), "pass uint8 images"),
    ((_images(4), torch.arange(4), _images(2), torch.tensor([0.5, 1.0])), "same kind of targets"),
    ((_images(4), torch.tensor([0, 1, 2, -1]), _images(2), torch.arange(2)), "indices must lie in"),
    ((_images(4), torch.ones(4, dtype=torch.bool), _images(2), torch.ones(2, dtype=torch.bool)), "integer class"),
    ((_images(4).numpy(), torch.arange(4), _images(2), torch.arange(2)), "not a tensor"),
])
def test_from_tensors_refuses_with_one_line(args, message):
    with pytest.raises(DataError, match=message) as err:
        DataBunch.from_tensors(*args, bs=2)
    assert "\n" not in str(err.value)


def test_from_tensors_refuses_too_few_classes_and_classes_for_regression():
    x = _images(4)
    with pytest.raises(DataError, match="there are 2 classes"):
        DataBunch.from_tensors(x, torch.arange(4), x, torch.arange(4), classes=["a", "b"])
    with pytest.raises(DataError, match="regression"):
        DataBunch.from_tensors(x, torch.rand(4), x, torch.rand(4), classes=["a"])


def test_from_loaders_moves_batches_and_keeps_the_loader_as_it_is():
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=g)
    valid = DataLoader(TensorDataset(x, y), batch_size=8)
    data = DataBunch.from_loaders(train, valid, classes=["no", "yes"])
    assert isinstance(data, LoaderBunch) and (data.c, data.device.type) == (2, "cpu")
    assert len(data.train) == 3 and data.train.generator is g and len(data.train_items) == 20
    xb, yb = next(iter(data.valid))
    assert torch.equal(xb, x[:8]) and torch.equal(yb, y[:8])
    assert data.meta() == {"classes": ["no", "yes"], "n_out": 2}
    assert data.to("cpu") is data


def test_from_loaders_refuses_what_the_learner_cannot_use():
    with pytest.raises(DataError, match="needs c"):
        DataBunch.from_loaders([], [])
    with pytest.raises(DataError, match="one name per output"):
        DataBunch.from_loaders([], [], c=3, classes=["a"])
    with pytest.raises(DataError, match="no length"):
        DataBunch.from_loaders(iter([]), [], c=2)
    data = DataBunch.from_loaders([{"x": torch.zeros(1)}], [], c=2)
    with pytest.raises(DataError, match="not an \\(x, y\\) pair"):
        next(iter(data.train))
