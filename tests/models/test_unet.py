"""The U-Net: (B, c, H, W) per-pixel scores for any input size, cnn and resnet18 encoders, 1 and 3
input channels; the encoder is a classifier's body (same ``body.*`` names); clear failures."""

from __future__ import annotations

# --- imports of the code under test (kept in one block: the registry move may rename them) ---
import pytest
import torch
import torchvision  # noqa: F401  (imported at collection: its start-up would otherwise land in one test)

from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.unet import Unet, UnetArch, encoder_config

ENCODERS = [UnetArch(encoder="cnn", channels=[8, 16, 32]), UnetArch(encoder="resnet18")]
# even, odd, non-square and tiny sizes: stride-2 stages round up, the decoder resizes to the skip
SIZES = [(32, 32), (33, 31), (15, 20), (7, 5), (1, 1)]
N_OUT = 5


@pytest.fixture(scope="module", params=[(cfg, n_in) for cfg in ENCODERS for n_in in (1, 3)],
                ids=lambda p: f"{p[0].encoder}-in{p[1]}")
def unet(request):
    cfg, n_in = request.param
    torch.manual_seed(0)
    return Unet(cfg, n_in, N_OUT), n_in


@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_output_shape_eval(unet, hw):
    model, n_in = unet
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, n_in, *hw))
    assert out.shape == (2, N_OUT, *hw)
    assert torch.isfinite(out).all()


def test_output_shape_train_and_backward(unet):
    model, n_in = unet
    model.train()
    torch.manual_seed(1)
    out = model(torch.randn(2, n_in, 19, 26))
    assert out.shape == (2, N_OUT, 19, 26)
    out.mean().backward()
    # gradients reach both ends: the encoder's first conv and the decoder's output conv
    first_conv = next(m for m in model.body.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert model.decoder.out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_eval_is_deterministic_and_per_image(unet):
    model, n_in = unet
    model.eval()
    torch.manual_seed(2)
    x = torch.randn(3, n_in, 16, 16)
    with torch.no_grad():
        a, b, single = model(x), model(x), model(x[1:2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(single[0], a[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", ENCODERS, ids=lambda c: c.encoder)
def test_encoder_is_the_classifier_body(cfg):
    """Same parameter names and shapes as the classifier's ``body.*``: a zoo classifier loads in."""
    torch.manual_seed(0)
    unet = Unet(cfg, 3, N_OUT)
    with torch.device("meta"):
        clf = create_model(encoder_config(cfg), 3, 2)
    body = {k: v.shape for k, v in clf.state_dict().items() if k.startswith("body.")}
    assert {k: v.shape for k, v in unet.state_dict().items() if k.startswith("body.")} == body
    assert unet.splits == clf.splits


def test_construction_leaves_batchnorm_statistics_untouched():
    """The channel probe at construction runs in eval mode: running stats stay at their init."""
    model = Unet(UnetArch(encoder="cnn", channels=[8, 16]), 3, 2)
    bns = [m for m in model.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert model.training and model.body.training


def test_cnn_encoder_taps_every_stage():
    model = Unet(UnetArch(encoder="cnn", channels=[4, 8, 16]), 1, 2).eval()
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 1, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]


def test_resnet_encoder_taps_stem_and_layers():
    model = Unet(UnetArch(encoder="resnet18"), 3, 2).eval()
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, 64, 64))
    # stem ReLU (1/2), layer1 (1/4) ... layer4 (1/32), finest first
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4),
                                                   (512, 2, 2)]


# ---------------------------------------------------------------------------- clear failures


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="encoder"):
        Unet(UnetArch(encoder="vgg16"), 3, 2)


def test_wrong_number_of_input_channels_fails():
    model = Unet(UnetArch(encoder="cnn", channels=[4, 8]), 3, 2).eval()
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.randn(1, 1, 16, 16))


def test_single_image_at_tiny_size_needs_eval_mode():
    """In training, batch norm needs more than one value per channel: one 16 px image leaves the
    ResNet's deepest stages at 1x1 and fails clearly; the same image in eval mode works."""
    torch.manual_seed(0)
    model = Unet(UnetArch(encoder="resnet18"), 3, 2)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()(x)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 2, 16, 16)
