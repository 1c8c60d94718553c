"""The ULMFiT tasks: tokenizer and vocab, AWD-LSTM, loaders, and whole runs through ``train``."""

from __future__ import annotations

import collections
import csv
import statistics

import pytest
import torch

from fastlab.config import to_run_config
from fastlab.data.text.pydocs import PyDocsData, _shingles, pydocs, pydocs_corpus, pydocs_unlabelled
from fastlab.data.text.tokens import (
    BOS,
    MAJ,
    PAD,
    REP,
    SPECIALS,
    UNK,
    UP,
    WREP,
    detokenize,
    make_vocab,
    numericalize,
    tokenize,
)
from fastlab.errors import ConfigError, DataError
from fastlab.models.awd_lstm import AwdLstmArch, AwdLstmClassifier, AwdLstmLM
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.test_cli import run_cli

# A small AWD-LSTM and short sequences: each run below takes seconds on one CPU core.
TINY = ["arch=awd_lstm", "arch.emb_sz=64", "arch.n_hid=128", "data.bptt=32", "data.max_len=64",
        "trainer.plots=false", "trainer.progress=none"]
LM_RUN = ["+experiment=ulmfit_lm", *TINY, "schedule.epochs=2", "data.max_vocab=3000"]
CLAS_RUN = ["+experiment=ulmfit_classify", *TINY, "schedule.epochs=2"]


# ------------------------------------------------------------------------- tokenizer, vocab
def test_tokenize_marks_case_and_repetition():
    toks = tokenize("Hello WORLD!!!! no no no no. I don't")
    assert toks == [BOS, MAJ, "hello", UP, "world", REP, "4", "!", WREP, "4", "no", ".", "i", "do", "n't"]
    assert detokenize(toks) == "Hello WORLD!!!! no no no no. i don't"


def test_tokenize_html_breaks_and_lowercases():
    assert tokenize("a<br />B") == [BOS, "a", "b"]  # one-letter capitals get no xxmaj, as in fastai


def test_vocab_specials_first_min_freq_and_max_vocab():
    docs = [tokenize("the cat sat on the mat"), tokenize("the dog sat")]
    vocab = make_vocab(docs, min_freq=2, max_vocab=100)
    assert vocab[: len(SPECIALS)] == SPECIALS and vocab[0] == UNK and vocab[1] == PAD
    assert vocab[len(SPECIALS):] == ["the", "sat"]  # the x3, sat x2; once-seen words are out
    assert make_vocab(docs, min_freq=1, max_vocab=len(SPECIALS) + 1)[-1] == "the"
    stoi = {t: i for i, t in enumerate(vocab)}
    assert numericalize(["the", "cat"], stoi) == [vocab.index("the"), 0]  # unknown -> xxunk


# ------------------------------------------------------------------------------- AWD-LSTM
def small_arch(**kw) -> AwdLstmArch:
    return AwdLstmArch(**{"emb_sz": 16, "n_hid": 24, "n_layers": 3, **kw})


def test_classifier_has_five_layer_groups_and_shares_body_keys_with_lm():
    clas, lm = AwdLstmClassifier(small_arch(), 50, 4), AwdLstmLM(small_arch(), 50)
    assert len(clas.layer_groups()) == 5 and len(lm.layer_groups()) == 5
    body = lambda m: {k: v.shape for k, v in m.state_dict().items() if k.startswith("body.")}  # noqa: E731
    assert body(clas) == body(lm) and len(body(lm)) == 1 + 4 * 3  # embedding + 4 tensors per LSTM
    assert lm.decoder.weight is lm.body.encoder.weight  # tied
    x = torch.randint(2, 50, (3, 7))
    assert lm(x).shape == (3, 7, 50) and clas.eval()(x).shape == (3, 4)


def test_weight_dropout_acts_in_training_only_and_trains_the_raw_weight():
    torch.manual_seed(0)
    lm = AwdLstmLM(small_arch(drop_mult=0.0), 50)
    lm.body.rnns[1].p = 0.5  # weight dropout alone, on the middle LSTM
    x = torch.randint(2, 50, (2, 9))
    lm.eval()
    assert torch.equal(lm(x), lm(x))
    lm.train()
    assert not torch.allclose(lm(x), lm(x))
    lm(x).sum().backward()
    raw = lm.body.rnns[1].module.weight_hh_l0
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_classifier_ignores_padding():
    torch.manual_seed(0)
    clas = AwdLstmClassifier(small_arch(), 50, 3).eval()
    x = torch.randint(2, 50, (2, 6))
    padded = torch.cat([x, torch.ones(2, 4, dtype=torch.long)], dim=1)  # xxpad is id 1
    assert torch.allclose(clas(x), clas(padded), atol=1e-6)


# ------------------------------------------------------------------------------- corpus
def test_pydocs_corpus_is_balanced_and_deterministic():
    texts, labels, items = pydocs_corpus()
    counts = collections.Counter(labels)
    assert len(counts) == 6 and len(texts) > 1200 and len(set(items)) == len(items)
    assert max(counts.values()) / len(labels) < 0.25  # majority class ~20%
    assert pydocs_corpus.__wrapped__() == (texts, labels, items)


def test_unlabelled_corpus_is_large_deterministic_and_free_of_labelled_text():
    # Read afresh here: a package imported by an earlier test may have replaced a standard-library
    # function since the cache was filled (ray swaps inspect.isgenerator and sys.excepthook), and
    # the corpus skips functions a module does not own.
    pydocs_unlabelled.cache_clear()
    texts, items = pydocs_unlabelled()
    labelled = pydocs_corpus()[0]
    # ~190k tokens (the language reference and other modules' docstrings) next to the labelled
    # training texts' ~72k: most of what the language model reads.
    assert sum(len(tokenize(t)) for t in texts) > 150_000
    assert any(i.startswith("pydoc_data.topics:") for i in items) and len(set(items)) == len(items)
    # No run of SHINGLE tokens of any labelled docstring (validation texts included) is in it.
    banned = set().union(*(_shingles(t) for t in labelled))
    assert not any(_shingles(t) & banned for t in texts)
    assert pydocs_unlabelled.__wrapped__() == (texts, items)
    src = pydocs(PyDocsData())
    assert src.unlabelled_items == list(items) and len(src.train_texts) + len(src.valid_texts) == len(labelled)
    assert pydocs(PyDocsData(unlabelled=False)).unlabelled_texts == []


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The small language model pretrained once on pydocs into a fresh zoo."""
    root = tmp_path_factory.mktemp("zoo")
    with one_thread():  # the ULMFiT bars below were measured on this language model, one thread
        metrics = train(compose_cfg(*LM_RUN, f"paths.models={root}", "trainer.plots=true", small=False),
                        run_dir=root / "lm_run")
    return root, metrics


def test_language_model_learns_pydocs(zoo):
    root, m = zoo
    assert m["status"] == "completed" and (root / "pydocs_lm.pt").is_file()
    assert m["layer_groups"] == 5
    # A unigram model of pydocs has perplexity ~250 (where an untrained stack plateaus first);
    # 2 epochs of this small model over the labelled and unlabelled texts (3,000-word vocabulary)
    # measured 81.3 (next-token accuracy 0.246) with one thread, 81.5 with two, seed 0 (the
    # config's; the zoo fixture trains it on one thread). Bars: perplexity below 120, i.e. clearly
    # using the context (38.7 of room); next-token accuracy over 0.15 (0.096 of room).
    assert m["final"]["perplexity"] < 120, m["final"]
    assert m["final"]["accuracy"] > 0.15  # next token; the most frequent token alone gives ~6%
    assert (root / "lm_run" / "plots" / "show_results.png").stat().st_size > 0
    ckpt = torch.load(root / "pydocs_lm.pt", weights_only=True)
    assert ckpt["meta"]["vocab"][:2] == [UNK, PAD] and ckpt["meta"]["classes"] is None


def classify(root, tmp_path, pretrained: str, seed: int, *extra: str) -> dict:
    return train(compose_cfg(*CLAS_RUN, f"arch.pretrained={pretrained}", f"paths.models={root}", f"seed={seed}",
                             *extra, small=False), run_dir=tmp_path / f"{pretrained}-{seed}")


SEEDS = (0, 1, 2, 3)


def test_ulmfit_classifier_beats_majority_and_scratch(zoo, tmp_path):
    """Module family of a docstring (6 classes, majority 19.8% of the validation set): the
    pretrained language model's body beats the same budget from scratch on every seed."""
    root, _ = zoo
    with one_thread():  # float sums (so the runs from scratch) move with the thread count
        pre = [classify(root, tmp_path, "pydocs_lm", s) for s in SEEDS]
        scratch = [classify(root, tmp_path, "null", s)["objective"] for s in SEEDS]
    acc = [m["objective"] for m in pre]
    assert pre[0]["pretrained"]["loaded"] == 13  # the embedding and 3 x 4 LSTM tensors
    assert [st["frozen"] for st in pre[0]["stages"]] == [4, 3, 2, 1, 0]  # gradual unfreezing
    # Measured on one thread, seeds 0-3, this configuration and zoo (/tmp/q31/ulmfit_measure.py,
    # language model perplexity 83.7): pretrained 0.428, 0.431, 0.351, 0.380 vs from scratch
    # 0.246, 0.220, 0.294, 0.304, i.e. +18.2, +21.1, +5.8, +7.7 points, +13.2 on the mean (issue
    # 31 measured +6.1 to +8.6 a seed on another set of packages). Bars: every seed above
    # scratch, the mean gain at least 4 points (a change that removes most of ULMFiT's benefit
    # fails it), and every pretrained run 12 points over the majority class (lowest measured:
    # 15.3 over).
    gains = [a - s for a, s in zip(acc, scratch)]
    assert all(g > 0 for g in gains), (acc, scratch)
    assert statistics.mean(gains) >= 0.04, (acc, scratch)
    assert all(a >= 0.198 + 0.12 for a in acc), (acc, scratch)


def test_classifier_show_results_and_vocab_from_lm(zoo, tmp_path):
    root, _ = zoo
    m = classify(root, tmp_path, "pydocs_lm", 0, "schedule.freeze_epochs=0", "schedule.epochs=1",
                 "trainer.plots=true")
    assert (tmp_path / "pydocs_lm-0" / "plots" / "show_results.png").stat().st_size > 0
    lm_vocab = torch.load(root / "pydocs_lm.pt", weights_only=True)["meta"]["vocab"]
    clas = torch.load(tmp_path / "pydocs_lm-0" / "model.pt", weights_only=True)["meta"]
    assert clas["vocab"] == lm_vocab and len(clas["classes"]) == 6 and m["status"] == "completed"


def test_pretrained_without_vocab_is_refused(zoo, tmp_path):
    root, _ = zoo
    train(compose_cfg("data=digits", "data.size=16", "arch.channels=[8]", "arch.head_hidden=8", "schedule.epochs=1",
                      "trainer.plots=false", "trainer.progress=none", "save_as=digits_cnn", f"paths.models={root}",
                      small=False), run_dir=tmp_path / "cnn")
    run = to_run_config(compose_cfg(*CLAS_RUN, "arch.pretrained=digits_cnn", f"paths.models={root}", small=False))
    with pytest.raises(ConfigError, match=r"^arch.pretrained holds a 'cnn' model without a vocabulary") as info:
        prepare(run)
    assert "\n" not in str(info.value)


def test_pretrained_lm_of_other_size_is_refused(zoo):
    root, _ = zoo
    run = to_run_config(compose_cfg(*CLAS_RUN, "arch.emb_sz=32", f"paths.models={root}", small=False))
    with pytest.raises(ConfigError, match="does not fit this awd_lstm") as info:
        prepare(run)
    assert "emb_sz" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- user data
WORDS = {"pos": "good great fine lovely superb", "neg": "bad awful poor dreadful terrible"}


def write_texts(root, n: int = 24):
    """Labelled reviews in the IMDb layout (plus unsup/) and the same texts as a CSV."""
    rows = []
    for label, words in WORDS.items():
        for i in range(n):
            w = words.split()
            text = f"This film was {w[i % 5]}. The cast was {w[(i + 2) % 5]} and the story {w[(i + 3) % 5]}."
            split = "test" if i % 4 == 0 else "train"
            path = root / "imdb" / split / label / f"{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            rows.append({"review": text, "sentiment": label, "is_valid": str(split == "test")})
    (root / "imdb" / "unsup").mkdir()
    (root / "imdb" / "unsup" / "0.txt").write_text("An unlabelled review of a film, neither good nor bad.")
    with open(root / "reviews.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["review", "sentiment", "is_valid"])
        writer.writeheader()
        writer.writerows(rows)


USER = [*TINY, "arch=awd_lstm", "task=text_classify", "schedule=one_cycle", "schedule.epochs=1", "data.bs=8",
        "data.min_freq=1"]


def test_text_folder_and_csv_train_one_epoch(tmp_path):
    write_texts(tmp_path)
    folder = train(compose_cfg(*USER, "data=text_folder", f"data.path={tmp_path / 'imdb'}", small=False),
                   run_dir=tmp_path / "folder")
    assert folder["status"] == "completed" and folder["epochs"] == 1
    lm = prepare(to_run_config(compose_cfg(*USER, "task=language_model", "data=text_folder",
                                           f"data.path={tmp_path / 'imdb'}", small=False))).data
    assert "unsup/0.txt" in lm.train_items  # unsup feeds the language model only
    xb, yb = next(iter(lm.train))
    assert xb.shape == yb.shape == (8, 32) and torch.equal(xb[:, 1:], yb[:, :-1])
    from_csv = train(compose_cfg(*USER, "data=text_csv", f"data.path={tmp_path}", "data.csv=reviews.csv",
                                 "data.text_col=review", "data.label_col=sentiment", "data.valid_col=is_valid",
                                 small=False), run_dir=tmp_path / "csv")
    assert from_csv["status"] == "completed"
    data = prepare(to_run_config(compose_cfg(*USER, "data=text_csv", f"data.path={tmp_path}", "data.csv=reviews.csv",
                                             "data.text_col=review", "data.label_col=sentiment",
                                             "data.valid_col=is_valid", small=False))).data
    assert data.classes == ["neg", "pos"] and len(data.valid_items) == 12
    assert data.meta()["vocab"][:2] == [UNK, PAD]


def test_csv_without_the_text_column_names_it_and_the_columns(tmp_path):
    write_texts(tmp_path)
    run = to_run_config(compose_cfg(*USER, "data=text_csv", f"data.path={tmp_path}", "data.csv=reviews.csv", small=False))
    with pytest.raises(DataError) as info:
        prepare(run)
    msg = str(info.value)
    assert "no column 'text'" in msg and "'review'" in msg and "data.text_col" in msg and "\n" not in msg


def test_empty_text_folder_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    run = to_run_config(compose_cfg(*USER, "data=text_folder", f"data.path={tmp_path}", small=False))
    with pytest.raises(DataError, match="has no label folders"):
        prepare(run)


def test_cli_text_csv_bad_column_is_one_line_and_exit_2(tmp_path):
    write_texts(tmp_path)
    out = run_cli([*USER, "data=text_csv", f"data.path={tmp_path}", "data.csv=reviews.csv", "data.text_col=body"],
                  cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "no column 'body'" in lines[0], out.stderr
