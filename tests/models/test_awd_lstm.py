"""AWD-LSTM: stateless encoder (hidden state starts at zero each batch), tied LM decoder, output
shapes, padding ignored by the classifier's concat pooling, dropouts (weight, embedding,
variational) active only in training."""

from __future__ import annotations

# --- imports of the code under test (kept in one block: the registry move may rename them) ---
import pytest
import torch
from torch import nn

from fastlab.data.text.tokens import PAD_ID
from fastlab.errors import ConfigError
from fastlab.models.awd_lstm import (
    AwdLstmArch,
    AwdLstmClassifier,
    AwdLstmEncoder,
    AwdLstmLM,
    RNNDropout,
    WeightDropout,
    awd_lstm,
    masked_concat_pool,
)
from fastlab.optimizer import param_groups

V, N_OUT = 40, 3
CFG = AwdLstmArch(emb_sz=8, n_hid=12, n_layers=2, head_hidden=6)


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    """Ids of real words (never PAD_ID)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, V, (b, t), generator=g)
    assert (x != PAD_ID).all()
    return x


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return AwdLstmLM(CFG, V)


@pytest.fixture
def clf():
    torch.manual_seed(0)
    model = AwdLstmClassifier(CFG, V, N_OUT)
    # non-trivial running statistics, so eval mode is not an identity batch norm
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(tokens(8, 6, seed=100 + s))
    return model.eval()


# ------------------------------------------------------------------------------------ builder


def test_builder_makes_lm_or_classifier():
    assert type(awd_lstm(CFG, V)) is AwdLstmLM
    model = awd_lstm(CFG, V, N_OUT)
    assert type(model) is AwdLstmClassifier
    assert model.head[-1].out_features == N_OUT
    assert model.body.encoder.num_embeddings == V


def test_schema_rejects_a_dropout_of_one_or_more():
    with pytest.raises(ConfigError, match="drop_mult"):
        AwdLstmArch(drop_mult=2.0)


# ------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("b,t", [(1, 1), (4, 7), (3, 20)])
def test_lm_output_shape(lm, b, t):
    for mode in (lm.train, lm.eval):
        mode()
        out = lm(tokens(b, t))
        assert out.shape == (b, t, V)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("b,t", [(2, 1), (4, 9)])
def test_classifier_output_shape(clf, b, t):
    assert clf(tokens(b, t)).shape == (b, N_OUT)
    clf.train()
    assert clf(tokens(b, t)).shape == (b, N_OUT)


def test_encoder_output_shape(lm):
    assert lm.body.eval()(tokens(3, 5)).shape == (3, 5, CFG.emb_sz)


# ------------------------------------------------------------------------------ hidden state


def test_no_state_carried_between_batches(lm):
    """The encoder is stateless (there is no reset()/hidden): a batch's output does not depend on
    what ran before it."""
    lm.eval()
    x = tokens(3, 6, seed=1)
    with torch.no_grad():
        fresh = lm(x)
        lm(tokens(3, 6, seed=2))
        lm(tokens(5, 11, seed=3))  # another batch size and length in between
        again = lm(x)
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)


def test_hidden_state_starts_at_zero(lm):
    """The body equals the LSTMs run by hand from explicit zero (h, c) states."""
    lm.eval()
    x = tokens(2, 5, seed=4)
    with torch.no_grad():
        out = nn.functional.embedding(x, lm.body.encoder.weight)
        for wd in lm.body.rnns:
            lstm = wd.module
            zeros = torch.zeros(1, x.shape[0], lstm.hidden_size)
            out, _ = lstm(out, (zeros, zeros))
        torch.testing.assert_close(lm.body(x), out)


def test_lm_is_causal(lm):
    """Step t's prediction only sees tokens up to t: a prefix gives the same logits."""
    lm.eval()
    x = tokens(2, 9, seed=5)
    with torch.no_grad():
        full, prefix = lm(x), lm(x[:, :4])
    torch.testing.assert_close(prefix, full[:, :4], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(full[:, 4], full[:, 3])


def test_rows_of_a_batch_are_independent(lm):
    lm.eval()
    x = tokens(4, 6, seed=6)
    with torch.no_grad():
        batch, row = lm(x), lm(x[2:3])
    torch.testing.assert_close(row[0], batch[2], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- tied weights


def test_lm_decoder_weight_is_the_embedding(lm):
    assert lm.decoder.weight is lm.body.encoder.weight
    assert lm.decoder.weight.data_ptr() == lm.body.encoder.weight.data_ptr()
    # one V x E matrix among the parameters, plus the decoder's bias (zero at init)
    assert sum(1 for p in lm.parameters() if p.shape == (V, CFG.emb_sz)) == 1
    assert torch.equal(lm.decoder.bias, torch.zeros(V))
    # an update through either name is seen by both
    with torch.no_grad():
        lm.body.encoder.weight[5].fill_(3.0)
    assert torch.equal(lm.decoder.weight[5], torch.full((CFG.emb_sz,), 3.0))


def test_tied_weight_gets_gradient_from_decoder_and_embedding(lm):
    lm.eval()
    lm(tokens(2, 4))[..., 7].sum().backward()
    g = lm.body.encoder.weight.grad
    assert g is not None and g[7].abs().sum() > 0  # decoder row 7 is embedding row 7
    assert lm.decoder.weight.grad is g


def test_tying_survives_load_state_dict(lm):
    torch.manual_seed(1)
    other = AwdLstmLM(CFG, V)
    lm.load_state_dict(other.state_dict())
    assert lm.decoder.weight is lm.body.encoder.weight
    torch.testing.assert_close(lm.decoder.weight, other.body.encoder.weight)


def test_optimiser_sees_tied_weight_once_in_embedding_group(lm):
    groups = param_groups(lm.layer_groups(), wd=0.01)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(lm.parameters()))
    (home,) = [g["layer_group"] for g in groups if any(p is lm.body.encoder.weight for p in g["params"])]
    assert home == 0
    last = [p for g in groups if g["layer_group"] == len(lm.layer_groups()) - 1 for p in g["params"]]
    assert len(last) == 1 and last[0] is lm.decoder.bias


# ------------------------------------------------------------------------------------ padding


def test_masked_concat_pool_ignores_padding():
    out = torch.tensor([[[1.0, -1.0], [3.0, -5.0], [100.0, 100.0]],
                        [[2.0, 0.0], [-9.0, 9.0], [-9.0, 9.0]]])  # (B=2, T=3, E=2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pooled = masked_concat_pool(out, mask)
    expected = torch.tensor([[3.0, -5.0, 3.0, -1.0, 2.0, -3.0],   # last, max, mean of 2 tokens
                             [2.0, 0.0, 2.0, 0.0, 2.0, 0.0]])     # one token: all three equal it
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize("n_pad", [1, 5])
def test_classifier_padding_gives_the_unpadded_output(clf, n_pad):
    x = tokens(3, 6, seed=7)
    padded = torch.cat([x, torch.full((3, n_pad), PAD_ID)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(clf(padded), clf(x), rtol=1e-5, atol=1e-6)


def test_classifier_mixed_lengths_batch(clf):
    """Right-padded rows of one batch each give what the text alone gives."""
    lengths = [6, 2, 4]
    texts = [tokens(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    batch = torch.full((3, max(lengths)), PAD_ID)
    for i, t in enumerate(texts):
        batch[i, :len(t)] = t
    with torch.no_grad():
        out = clf(batch)
        for i, t in enumerate(texts):
            torch.testing.assert_close(out[i], clf(t[None])[0], rtol=1e-5, atol=1e-6)


def test_padding_matters_only_as_padding(clf):
    """Sanity check that the test above can fail: the same positions filled with a real word change
    the output."""
    x = tokens(2, 5, seed=8)
    with torch.no_grad():
        a = clf(torch.cat([x, torch.full((2, 3), PAD_ID)], 1))
        b = clf(torch.cat([x, torch.full((2, 3), 5)], 1))
    assert not torch.allclose(a, b)


def test_pad_embedding_row_starts_at_zero(lm):
    assert torch.equal(lm.body.encoder.weight[PAD_ID], torch.zeros(CFG.emb_sz))


# ------------------------------------------------------------------------------------ dropout


@pytest.mark.parametrize("make", [lambda: AwdLstmLM(CFG, V), lambda: AwdLstmClassifier(CFG, V, N_OUT)],
                         ids=["lm", "classifier"])
def test_eval_deterministic_train_stochastic(make):
    torch.manual_seed(0)
    model = make()
    x = tokens(4, 6, seed=9)
    model.eval()
    with torch.no_grad():
        a = model(x)
        torch.manual_seed(123)  # another random state: eval must not use it
        b = model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_weight_dropout_only_in_training():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, batch_first=True)
    raw = lstm.weight_hh_l0.detach().clone()
    wd = WeightDropout(lstm, p=0.5)
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        plain = lstm(x)[0]
        wd.eval()
        torch.testing.assert_close(wd(x)[0], plain, rtol=0, atol=0)
        wd.train()
        t1, t2 = wd(x)[0], wd(x)[0]
    assert not torch.allclose(t1, plain) and not torch.allclose(t1, t2)
    # the raw weight stays the parameter and is never overwritten by a dropped-out copy
    assert torch.equal(lstm.weight_hh_l0, raw)
    assert [n for n, _ in wd.named_parameters()].count("module.weight_hh_l0") == 1


def test_weight_dropout_gradient_reaches_raw_weight():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, batch_first=True)
    wd = WeightDropout(lstm, p=0.5).train()
    wd(torch.randn(2, 5, 4))[0].sum().backward()
    g = lstm.weight_hh_l0.grad
    assert g is not None and g.abs().sum() > 0
    assert (g == 0).any()  # dropped connections get no gradient


def test_weight_dropout_p0_in_training_is_the_plain_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, batch_first=True)
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(WeightDropout(lstm, p=0.0).train()(x)[0], lstm(x)[0])


def test_rnn_dropout_mask_is_shared_over_time():
    torch.manual_seed(0)
    dp = RNNDropout(0.5).train()
    y = dp(torch.ones(4, 7, 10))
    torch.testing.assert_close(y, y[:, :1].expand_as(y))  # the same mask at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}
    x = torch.randn(4, 7, 10)
    assert dp.eval()(x) is x


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    enc = AwdLstmEncoder(V, 8, 12, 1, hidden_p=0.0, input_p=0.0, embed_p=0.5, weight_p=0.0)
    x = torch.tensor([[5, 6, 5, 7, 6, 5, 8, 9, 10, 11]])
    w = enc.encoder.weight
    enc.train()
    e = enc.embed(x)[0]  # (T, E)
    dropped = (e == 0).all(dim=1)
    assert dropped.any() and not dropped.all()
    for t in range(x.shape[1]):
        expect = torch.zeros(8) if dropped[t] else w[x[0, t]] * 2.0
        torch.testing.assert_close(e[t], expect)
    assert dropped[0] == dropped[2] == dropped[5] and dropped[1] == dropped[4]  # per word, not per position
    enc.eval()
    torch.testing.assert_close(enc.embed(x)[0], w[x[0]])


def test_drop_mult_scales_every_dropout():
    clf = AwdLstmClassifier(AwdLstmArch(emb_sz=8, n_hid=12, n_layers=2, drop_mult=0.0), V, N_OUT)
    x = tokens(3, 6)
    clf.train()
    assert clf.body.rnns[0].p == 0 and clf.body.embed_p == 0
    # with drop_mult 0 only the head's fixed dropout remains: the body is deterministic in training
    with torch.no_grad():
        torch.testing.assert_close(clf.body(x), clf.body(x), rtol=0, atol=0)
