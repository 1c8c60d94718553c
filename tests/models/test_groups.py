"""Layer groups of every architecture: how many, that they partition the parameters exactly
(each parameter in one group, none missing), the head last; fast.ai's ResNet split."""

from __future__ import annotations

# --- imports of the code under test (kept in one block: the registry move may rename them) ---
import pytest
import torch
import torchvision  # noqa: F401  (imported at collection: its start-up would otherwise land in one test)
from torch import nn
from torchvision import models as tvm

from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.awd_lstm import AwdLstmArch, AwdLstmClassifier, AwdLstmLM
from fastlab.models.cnn import CnnArch
from fastlab.models.resnet import ResnetArch
from fastlab.models.tabular import TabularArch, TabularModel, emb_sz_rule, tabular_mlp
from fastlab.models.unet import Unet, UnetArch


def group_ids(groups: list[nn.Module]) -> list[set[int]]:
    return [{id(p) for p in g.parameters()} for g in groups]


def assert_partition(model: nn.Module, groups: list[nn.Module]) -> None:
    """Every parameter of ``model`` in exactly one group, and nothing else in the groups."""
    ids = group_ids(groups)
    every = [i for s in ids for i in s]
    assert len(every) == len(set(every)), "a parameter is in two layer groups"
    assert set(every) == {id(p) for p in model.parameters()}, "groups and model parameters differ"
    assert all(ids), "an empty layer group"


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ cnn


@pytest.mark.parametrize("channels,n_groups,first_len", [
    ([8], 2, 1),
    ([8, 16], 3, 1),
    ([8, 16, 32], 3, 2),
    ([8, 16, 32, 64], 3, 2),
])
def test_cnn_groups(channels, n_groups, first_len):
    model = create_model(CnnArch(channels=channels, head_hidden=16), 3, 4)
    groups = model.layer_groups()
    assert len(groups) == n_groups
    assert groups[-1] is model.head
    assert len(groups[0]) == first_len
    assert_partition(model, groups)


def test_cnn_group_order_follows_stages():
    model = create_model(CnnArch(channels=[8, 16, 32]), 1, 4)
    g0, g1, _ = model.layer_groups()
    assert g0[0] is model.body[0] and g0[1] is model.body[1] and g1[0] is model.body[2]


# --------------------------------------------------------------------------------------- resnet


@pytest.fixture(scope="module", params=["resnet18", "resnet34"])
def resnet_pair(request):
    """(fastlab model, torchvision reference of the same architecture)."""
    torch.manual_seed(0)
    with torch.device("meta"):  # the reference only needs shapes: no time spent initialising
        ref = getattr(tvm, request.param)(weights=None)
    return create_model(ResnetArch(name=request.param), 3, 5), ref


def test_resnet_has_fastai_three_groups(resnet_pair):
    model, _ = resnet_pair
    groups = model.layer_groups()
    assert len(groups) == 3
    assert groups[-1] is model.head
    assert_partition(model, groups)


def test_resnet_split_is_stem_to_layer2_then_layer3_layer4(resnet_pair):
    model, ref = resnet_pair
    g0, g1, g2 = model.layer_groups()
    stem_to_l2 = [ref.conv1, ref.bn1, ref.layer1, ref.layer2]
    assert numel(g0) == sum(numel(m) for m in stem_to_l2)
    assert numel(g1) == numel(ref.layer3) + numel(ref.layer4)
    # structure, not only counts: group 1 is layer3 (256 ch) then layer4 (512 ch)
    assert len(g1) == 2
    assert [blk[-1].conv1.in_channels for blk in g1] == [256, 512]
    assert g0[0].out_channels == 64 and g0[-1][-1].conv1.in_channels == 128  # ends with layer2
    # the head: fast.ai's concat pooling over layer4's 512 features
    assert next(m for m in g2 if isinstance(m, nn.Linear)).in_features == 2 * 512


def test_resnet_one_channel_stem_keeps_split():
    model = create_model(ResnetArch(name="resnet18"), 1, 2)
    g0, g1, _ = model.layer_groups()
    assert g0[0].in_channels == 1
    assert_partition(model, model.layer_groups())
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 2)


# ----------------------------------------------------------------------------------------- unet


@pytest.mark.parametrize("cfg,n_encoder_groups", [
    (UnetArch(encoder="cnn", channels=[8, 16, 32]), 2),
    (UnetArch(encoder="cnn", channels=[8]), 1),
    (UnetArch(encoder="resnet18"), 2),
])
def test_unet_groups(cfg, n_encoder_groups):
    torch.manual_seed(0)
    model = Unet(cfg, 3, 4)
    groups = model.layer_groups()
    assert len(groups) == n_encoder_groups + 1
    assert groups[-1] is model.decoder
    assert_partition(model, groups)


def test_unet_encoder_groups_match_classifier_split():
    cfg = UnetArch(encoder="resnet18")
    unet = Unet(cfg, 3, 4)
    with torch.device("meta"):
        clf = create_model(ResnetArch(name="resnet18"), 3, 4)
    assert [numel(g) for g in unet.layer_groups()[:-1]] == [numel(g) for g in clf.layer_groups()[:-1]]


# ------------------------------------------------------------------------------------- awd_lstm

SMALL_LSTM = AwdLstmArch(emb_sz=8, n_hid=12, n_layers=3, head_hidden=6)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_awd_lstm_classifier_groups(n_layers):
    cfg = AwdLstmArch(emb_sz=8, n_hid=12, n_layers=n_layers, head_hidden=6)
    model = AwdLstmClassifier(cfg, 30, 3)
    groups = model.layer_groups()
    assert len(groups) == n_layers + 2  # embedding, each LSTM, head
    assert groups[-1] is model.head
    assert list(groups[0].parameters()) == [model.body.encoder.weight]
    assert_partition(model, groups)


def test_awd_lstm_lm_groups_share_only_the_tied_weight():
    """The LM's decoder weight is the embedding's: the two groups share exactly that parameter;
    counted once (first group wins, as the optimiser's ``param_groups`` does) the groups partition
    the model and the decoder group keeps only its bias."""
    model = AwdLstmLM(SMALL_LSTM, 30)
    groups = model.layer_groups()
    assert len(groups) == SMALL_LSTM.n_layers + 2
    assert any(m is model.decoder for m in groups[-1].modules())
    ids = group_ids(groups)
    tied = id(model.body.encoder.weight)
    shared = {i for a in range(len(ids)) for b in range(a + 1, len(ids)) for i in ids[a] & ids[b]}
    assert shared == {tied}
    assert tied in ids[0]
    seen, unique = set(), []
    for s in ids:
        unique.append(s - seen)
        seen |= s
    assert seen == {id(p) for p in model.parameters()}
    assert unique[-1] == {id(model.decoder.bias)}
    assert all(unique)


# -------------------------------------------------------------------------------------- tabular


def tabular(arch: TabularArch, emb_sizes=(3, 10), n_cont=4, n_out=2, **kw) -> TabularModel:
    model = tabular_mlp(arch, list(emb_sizes), n_cont, n_out, **kw)
    assert isinstance(model, TabularModel)
    return model


@pytest.mark.parametrize("emb_sizes,n_cont,layers", [
    ((3, 10), 4, [20, 10]),
    ((5,), 0, [8]),
    ((), 3, [8, 8, 8]),
])
def test_tabular_groups(emb_sizes, n_cont, layers):
    torch.manual_seed(0)
    model = tabular(TabularArch(layers=layers), emb_sizes, n_cont)
    groups = model.layer_groups()
    assert len(groups) == 3  # embeddings + continuous batch norm, hidden layers, final Linear
    assert groups[-1] is model.head and isinstance(model.head, nn.Linear)
    assert_partition(model, groups)
    b = 4
    cats = torch.stack([torch.randint(0, n, (b,)) for n in emb_sizes], 1) if emb_sizes else torch.zeros(b, 0).long()
    assert model.eval()((cats, torch.randn(b, n_cont))).shape == (b, 2)


def test_tabular_embedding_widths_and_hidden_layers():
    model = tabular(TabularArch(layers=[20, 10], ps=0.25), emb_sizes=(3, 10, 1000), n_cont=2)
    assert [e.embedding_dim for e in model.embeds] == [emb_sz_rule(n) for n in (3, 10, 1000)]
    assert emb_sz_rule(10) == 6 and emb_sz_rule(10**7) == 600
    lins = [m for m in model.body if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in lins] == [(sum(emb_sz_rule(n) for n in (3, 10, 1000)) + 2, 20),
                                                                (20, 10)]
    assert all(lin.bias is None for lin in lins)
    assert [d.p for d in model.body if isinstance(d, nn.Dropout)] == [0.25, 0.25]
    assert model.head.in_features == 10


def test_tabular_schema_rejects_bad_layers():
    with pytest.raises(ConfigError, match="arch.layers"):
        TabularArch(layers=[8, 0])


def test_tabular_regression_rescales_the_head_output():
    torch.manual_seed(0)
    model = tabular(TabularArch(layers=[8]), y_mean=10.0, y_std=2.0).eval()
    raw = {}
    model.head.register_forward_hook(lambda m, i, o: raw.setdefault("out", o))
    x = (torch.stack([torch.randint(0, 3, (5,)), torch.randint(0, 10, (5,))], 1), torch.randn(5, 4))
    out = model(x)
    torch.testing.assert_close(out, raw["out"] * 2.0 + 10.0)
    assert {"y_mean", "y_std"} <= set(model.state_dict())
