"""fastlab.models.core: concat pooling, fast.ai's head, SigmoidRange, BodyHead's layer groups, and
the ``create_model`` registry."""

from __future__ import annotations

# --- imports of the code under test (kept in one block: the registry move may rename them) ---
import pytest
import torch
from torch import nn

from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.cnn import CnnArch
from fastlab.models.core import AdaptiveConcatPool2d, BodyHead, SigmoidRange, create_head
from fastlab.models.unet import UnetArch

# ------------------------------------------------------------------------ AdaptiveConcatPool2d


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 8)])
def test_concat_pool_shape_and_values(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    out = AdaptiveConcatPool2d()(x)
    b, c = shape[:2]
    assert out.shape == (b, 2 * c, 1, 1)
    # fastai's order: max first, then average
    torch.testing.assert_close(out[:, :c, 0, 0], x.amax(dim=(2, 3)))
    torch.testing.assert_close(out[:, c:, 0, 0], x.mean(dim=(2, 3)))


def test_concat_pool_has_no_parameters():
    assert list(AdaptiveConcatPool2d().parameters()) == []


# -------------------------------------------------------------------------------- create_head


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (3, 5)])
def test_create_head_shape(hw):
    torch.manual_seed(0)
    head = create_head(8, 5, hidden=16, dropout=0.5).eval()
    out = head(torch.randn(3, 8, *hw))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


def test_create_head_layout():
    head = create_head(8, 5, hidden=16, dropout=0.4)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    drops = [m for m in head if isinstance(m, nn.Dropout)]
    bns = [m for m in head if isinstance(m, nn.BatchNorm1d)]
    assert isinstance(head[0], AdaptiveConcatPool2d)
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(16, 16), (16, 5)]
    assert linears[0].bias is None and linears[1].bias is not None  # batch norm follows the first
    assert [bn.num_features for bn in bns] == [16, 16]
    assert [d.p for d in drops] == pytest.approx([0.2, 0.4])  # the first dropout is half the second
    assert isinstance(head[-1], nn.Linear)


def test_create_head_eval_is_deterministic_train_is_not():
    torch.manual_seed(0)
    head = create_head(8, 5, hidden=64, dropout=0.5)
    x = torch.randn(4, 8, 2, 2)
    head.eval()
    torch.testing.assert_close(head(x), head(x), rtol=0, atol=0)
    head.train()
    assert not torch.equal(head(x), head(x))


# ------------------------------------------------------------------------------- SigmoidRange


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 5.0), (2.5, 3.0)])
def test_sigmoid_range_bounds_and_midpoint(lo, hi):
    torch.manual_seed(0)
    sr = SigmoidRange(lo, hi)
    x = torch.randn(64, 3) * 4  # moderate logits: strictly inside the range
    y = sr(x)
    assert y.shape == x.shape
    assert (y > lo).all() and (y < hi).all()
    torch.testing.assert_close(sr(torch.zeros(2, 2)), torch.full((2, 2), (lo + hi) / 2))
    torch.testing.assert_close(y, lo + (hi - lo) * torch.sigmoid(x))
    # monotone increasing
    xs = torch.linspace(-6, 6, 50)
    assert (sr(xs).diff() > 0).all()


def test_sigmoid_range_extreme_logits_stay_in_closed_range():
    # float32's sigmoid saturates to exactly 0/1 for |x| >~ 17 (see report): the bound is closed there
    y = SigmoidRange(-1, 1)(torch.tensor([-1e4, -50.0, 50.0, 1e4]))
    assert torch.isfinite(y).all()
    assert (y >= -1).all() and (y <= 1).all()


def test_sigmoid_range_leaves_state_dict_unchanged():
    head = create_head(4, 2, hidden=8)
    with_range = nn.Sequential(*head, SigmoidRange(-1, 1))
    assert list(SigmoidRange(0, 1).state_dict()) == []
    assert list(with_range.state_dict()) == list(head.state_dict())
    with_range.load_state_dict(head.state_dict())  # a checkpoint of the bare head loads
    assert "lo=-1" in repr(with_range[-1]) and "hi=1" in repr(with_range[-1])


# ------------------------------------------------------------------------------------ BodyHead


def _toy_body(n: int) -> nn.Sequential:
    return nn.Sequential(*(nn.Linear(3, 3) for _ in range(n)))


@pytest.mark.parametrize("n_stages,splits,expected", [
    (5, (2, 4), [2, 2, 1]),
    (5, (), [5]),
    (3, (1,), [1, 2]),
])
def test_bodyhead_layer_groups(n_stages, splits, expected):
    body, head = _toy_body(n_stages), nn.Sequential(nn.Linear(3, 2))
    model = BodyHead(body, head, splits)
    groups = model.layer_groups()
    assert len(groups) == len(expected) + 1
    assert [len(g) for g in groups[:-1]] == expected
    assert groups[-1] is head
    # the body's stages appear in order, each exactly once
    stages = [m for g in groups[:-1] for m in g]
    assert len(stages) == n_stages and all(a is b for a, b in zip(stages, body))


def test_bodyhead_forward_is_head_of_body():
    torch.manual_seed(0)
    body, head = _toy_body(2), nn.Sequential(nn.Linear(3, 2))
    model = BodyHead(body, head, (1,))
    x = torch.randn(4, 3)
    torch.testing.assert_close(model(x), head(body(x)))


# -------------------------------------------------------------------------------- create_model


def test_create_model_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_arch"):
        create_model(CnnArch(name="no_such_arch"), 3, 2)


def test_create_model_rejects_an_arch_that_is_not_a_classifier_body():
    with pytest.raises(ConfigError, match="unet"):
        create_model(UnetArch(), 3, 2)


@pytest.mark.parametrize("n_in", [1, 3])
def test_create_model_cnn_shape(n_in):
    torch.manual_seed(0)
    model = create_model(CnnArch(channels=[8, 16, 32], head_hidden=16), n_in, 7).eval()
    assert isinstance(model, BodyHead)
    assert model(torch.randn(2, n_in, 32, 32)).shape == (2, 7)
    assert model(torch.randn(2, n_in, 17, 23)).shape == (2, 7)  # concat pooling: any input size
