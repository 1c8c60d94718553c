"""Every task's built-in experiment, trained small: fastlab-predict on the run and on its
fastlab-export bundle (the same JSON), the served /predict, Learner.predict, fastlab-interpret's
view, and bad inputs refused with one line (CLI, exit 2) or a 4xx (server)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from fastlab.cli.export import export
from fastlab.cli.predict import main as predict_main
from fastlab.inference import BUNDLE_META, InputError, Predictor
from fastlab.inference.text import N_WORDS
from fastlab.interpret import interpret_run
from fastlab.run.train import train
from fastlab.serve.app import create_app
from tests.conftest import one_thread
from tests.inference.cases import (
    EXPERIMENTS,
    IMAGE_CASES,
    TABLE_CASES,
    TEXT_CASES,
    compose,
    make_inputs,
    png_values,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Train and predict on one thread: on a shared CPU PyTorch's threads wait on each other
    (a language model's first continuation took 4 s on two threads, 0.1 s on one)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def lm_run(zoo, tmp_path_factory):
    """The language model, saved into the zoo as ``pydocs_lm`` for the classifier."""
    return _train("language_model", zoo, tmp_path_factory)


def _train(name, zoo, tmp_path_factory):
    run_dir, cfg = tmp_path_factory.mktemp(name), compose(name, zoo)
    assert train(cfg, run_dir=run_dir)["status"] == "completed"
    return run_dir, cfg


@pytest.fixture(scope="module", params=list(EXPERIMENTS))
def case(request, zoo, tmp_path_factory):
    """(name, run dir, bundle, inputs) of one task's experiment."""
    name = request.param
    if name == "language_model":
        run_dir, cfg = request.getfixturevalue("lm_run")
    else:
        if name == "text_classify":
            request.getfixturevalue("lm_run")  # the classifier starts from it
        run_dir, cfg = _train(name, zoo, tmp_path_factory)
    bundle = export(run_dir, tmp_path_factory.mktemp("bundles") / name)
    return name, run_dir, bundle, make_inputs(name, cfg, tmp_path_factory.mktemp(f"{name}_inputs"))


def cli(capsys, *args) -> list[dict]:
    predict_main([str(a) for a in args])
    return json.loads(capsys.readouterr().out)


def cli_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        predict_main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert e.value.code == 2 and captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith("fastlab-predict: error: ")
    return lines[0]


def same(a, b) -> bool:
    """Equal JSON, floats to 1e-5: the server batches requests its own way, and a matrix product's
    last bits depend on the batch."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def check_result(name: str, r: dict, p: Predictor) -> None:
    """What each task answers."""
    m = p.meta
    assert isinstance(r["label"], str)
    if m.classes is not None and name != "segment":
        assert r["label"] in m.classes and r["label"] == r["top"][0]["label"]
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == min(3, len(m.classes)) and probs == sorted(probs, reverse=True)
    elif name == "points":
        assert len(r["value"]) == 2 and r["points"] == [r["value"]] and all(-1 <= v <= 1 for v in r["value"])
    elif name == "segment":
        mask = png_values(r["mask_png"])  # the code index of each pixel, at the model's size
        assert mask.shape == (m.size, m.size) and r["size"] == [m.size, m.size]
        counts = {c: int((mask == i).sum()) for i, c in enumerate(m.codes)}
        assert r["pixels"] == counts and sum(counts.values()) == m.size**2
        assert r["label"].split(", ")[0] == max(counts, key=counts.get)
    elif name == "language_model":
        assert len(r["next_words"]) == N_WORDS and r["label"].strip()
        assert "xxunk" not in r["next_words"] and len(r["top"]) == 3
    else:  # tabular regression: the target's units
        assert isinstance(r["value"], float) and math.isfinite(r["value"]) and r["top"] == []


# ---------------------------------------------------------------------------- predict, export


def test_predict_run_then_bundle_gives_the_same_json(case, capsys):
    name, run_dir, bundle, inputs = case
    from_run = cli(capsys, run_dir, *inputs.files)
    from_bundle = cli(capsys, bundle, *inputs.files)
    assert from_run == from_bundle
    p = Predictor.load(bundle)
    n_items = len(inputs.rows) if name in TABLE_CASES else len(inputs.files)
    assert len(from_run) == n_items
    for r in from_run:
        check_result(name, r, p)
    assert [r["file"] for r in from_run] == [str(f) for f in inputs.files for _ in range(n_items // len(inputs.files))]


def test_bundle_meta_keeps_what_the_task_needs(case):
    name, run_dir, bundle, _ = case
    saved = torch.load(run_dir / "model.pt", weights_only=True)["meta"]
    meta = json.loads((bundle / BUNDLE_META).read_text())["meta"]
    needs = {"classify": ["classes", "mean", "std", "size", "n_in"], "points": ["y_range", "points", "mean"],
             "segment": ["codes", "void", "mean", "std"], "language_model": ["vocab", "bptt"],
             "text_classify": ["vocab", "classes", "max_len"], "tabular": ["procs", "classes", "cat_names"],
             "tabular_diabetes": ["procs", "y_mean", "y_std", "cont_names"]}[name]
    for key in needs:
        assert meta[key] == saved[key], key


def test_texts_and_rows_from_the_command_line(case, capsys):
    name, run_dir, bundle, inputs = case
    if name in TEXT_CASES:
        [r] = cli(capsys, bundle, "--text", inputs.json_body["text"])
        assert r["text"] == inputs.json_body["text"]
        from_file = cli(capsys, bundle, inputs.files[0])[0]
        assert {k: v for k, v in r.items() if k != "text"} == {k: v for k, v in from_file.items() if k != "file"}
    elif name in TABLE_CASES:
        [r] = cli(capsys, bundle, "--text", json.dumps(inputs.rows[0]))
        first = cli(capsys, bundle, inputs.files[0])[0]
        # One row alone or among twelve: the same answer, up to the last float digit (the matrix
        # kernels of a 1-row and a 12-row batch add in different orders).
        assert r["label"] == first["label"]
        top, top_first = r.get("top") or [], first.get("top") or []
        assert [t["label"] for t in top] == [t["label"] for t in top_first]
        assert [t["prob"] for t in top] == pytest.approx([t["prob"] for t in top_first], abs=1e-6)
    else:
        assert "not --text" in cli_error(capsys, bundle, "--text", "hello")


@pytest.mark.parametrize("case", TABLE_CASES, indirect=True)
def test_tabular_rows_are_read_as_training_read_them(case):
    """CSV rows give the model's own validation predictions: FillMissing, Categorify and Normalize
    re-applied from the saved procs; an unseen category reads as a missing one (#na#)."""
    name, run_dir, bundle, inputs = case
    from fastlab.interpret import Interpretation

    p = Predictor.load(bundle)
    interp = Interpretation.from_run_dir(run_dir)
    expected = interp.preds[: len(inputs.rows)]
    got = p.predict_many(inputs.rows, top_k=10)
    if p.meta.classes is not None:
        probs = torch.tensor([[{t["label"]: t["prob"] for t in r["top"]}[c] for c in p.meta.classes] for r in got])
        assert torch.allclose(probs, expected.softmax(dim=1), atol=1e-5)
    else:
        assert torch.allclose(torch.tensor([r["value"] for r in got]), expected.view(-1), atol=1e-3)
    cat = p.task.procs.cat_names[0]
    unseen, missing = dict(inputs.rows[0], **{cat: "never seen"}), dict(inputs.rows[0], **{cat: None})
    assert p.predict(unseen) == p.predict(missing)


@pytest.mark.parametrize("case", ["tabular", "text_classify"], indirect=True)  # images: tests/test_transfer.py
def test_learner_predict_reads_the_task_input(case):
    name, run_dir, bundle, inputs = case
    from fastlab.config import to_run_config
    from fastlab.run.prepare import prepare

    cfg = torch.load(run_dir / "model.pt", weights_only=True)["meta"]["config"]
    learn = prepare(to_run_config(cfg)).learn
    item = inputs.rows[0] if name == "tabular" else inputs.json_body["text"]
    out = learn.predict(item)
    assert out["label"] in learn.data.classes and learn.model.training  # the mode is left as it was


# ---------------------------------------------------------------------------- serve


@pytest.fixture(scope="module")
def clients(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    p = Predictor.load(case[2])
    with TestClient(create_app(p, max_batch=4)) as c:
        yield c, p


def test_serve_answers_predict_and_shows_the_right_page(case, clients, capsys):
    name, run_dir, bundle, inputs = case
    client, p = clients
    expected = [{k: v for k, v in r.items() if k not in ("file", "row")} for r in cli(capsys, bundle, inputs.files[0])]
    r = client.post("/predict", files={"file": inputs.upload})
    assert r.status_code == 200, r.text
    assert same(r.json(), {"predictions": expected} if name in TABLE_CASES else expected[0])
    r = client.post("/predict", json=inputs.json_body)
    assert r.status_code == 200, r.text
    assert same(r.json(), expected[0])
    page = client.get("/").text
    kind = {"image": 'type="file" id="file" name="file" accept="image/*"', "text": '<textarea id="text"',
            "table": 'accept=".csv'}[p.task.input_kind]
    assert kind in page and 'src=""' not in page and '<img id="preview" alt="the uploaded image" hidden>' in page
    health = client.get("/health").json()
    assert health["task"] == p.meta.task and health["input"] == p.task.input_kind


def bad_requests(name: str, inputs) -> list[tuple[dict, int, str]]:
    if name in IMAGE_CASES:
        return [({"files": {"file": ("notes.txt", b"hello there", "text/plain")}}, 415, "is not an image Pillow can read"),
                ({"json": {"text": "a digit"}}, 400, 'the JSON body must be {"image"')]
    if name in TEXT_CASES:
        return [({"json": {"text": "   "}}, 400, "the text is empty"),
                ({"json": {"image": "abc"}}, 400, 'the JSON body must be {"text"'),
                ({"files": {"file": ("t.txt", b"\xff\xfe\xfa", "text/plain")}}, 400, "is not UTF-8 text"),
                ({"files": {"file": ("t.txt", b"", "text/plain")}}, 400, "is empty")]
    first = inputs.rows[0]
    col = [c for c in first if isinstance(first[c], float)][0]  # a continuous column
    return [({"json": {"row": {k: v for k, v in first.items() if k != col}}}, 400, f"has no column '{col}'"),
            ({"json": {"row": dict(first, **{col: "lots"})}}, 400, f"continuous column '{col}' holds 'lots'"),
            ({"json": {"rows": "nope"}}, 400, 'the JSON body must be {"row"'),
            ({"files": {"file": ("r.csv", b"a,b\n1,2\n", "text/csv")}}, 400, "'r.csv' has no column")]


def test_serve_refuses_bad_inputs_with_a_4xx_and_keeps_serving(case, clients):
    name, _, _, inputs = case
    client, _ = clients
    for kwargs, status, fragment in bad_requests(name, inputs):
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        error = r.json()["error"]
        assert fragment in error and "\n" not in error, error
    assert client.post("/predict", files={"file": inputs.upload}).status_code == 200


def test_cli_refuses_bad_inputs_with_one_line(case, capsys, tmp_path):
    name, _, bundle, inputs = case
    bad = tmp_path / "bad.txt"
    if name in IMAGE_CASES:
        bad.write_text("not an image")
        assert "is not an image Pillow can read" in cli_error(capsys, bundle, bad)
        p = Predictor.load(bundle)
        wrong = torch.zeros(4 - p.meta.n_in, p.meta.size, p.meta.size, dtype=torch.uint8)  # 1 <-> 3 channels
        with pytest.raises(InputError, match="a tensor input must be uint8"):
            p.predict(wrong)
    elif name in TEXT_CASES:
        assert "'--text' is empty" in cli_error(capsys, bundle, "--text", "  ")
        assert "text file" in cli_error(capsys, bundle, tmp_path / "nope.txt")
        bad.write_text("\n")
        assert "is empty" in cli_error(capsys, bundle, bad)
    else:
        lines = inputs.files[0].read_text().splitlines()
        header = lines[0].split(",")
        drop = header.index(list(inputs.rows[0])[0])  # the first input column
        bad.write_text("\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != drop) for line in lines))
        line = cli_error(capsys, bundle, bad)
        assert f"has no column '{header[drop]}'" in line and "every input column" in line
        assert "is not JSON" in cli_error(capsys, bundle, "--text", "{oops")
    assert "nothing to predict" in cli_error(capsys, bundle)


# ---------------------------------------------------------------------------- interpret


VIEWS = {"classify": {"top_losses", "show_results", "confusion_matrix", "most_confused"},
         "points": {"top_losses", "largest_errors", "show_results"},
         "segment": {"worst_masks", "worst_masks_json"},
         "language_model": {"top_losses"},
         "text_classify": {"top_losses", "confusion_matrix", "most_confused"},
         "tabular": {"top_losses", "confusion_matrix", "most_confused"},
         "tabular_diabetes": {"top_losses"}}


def test_interpret_gives_each_task_its_view(case):
    name, run_dir, _, _ = case
    lines: list[str] = []
    written = interpret_run(run_dir, k=3, echo=lines.append)
    assert set(written) == VIEWS[name]
    for path in written.values():
        assert path.parent == run_dir / "interpret" and path.stat().st_size > 0
    jsons = [p for p in written.values() if p.suffix == ".json" and p.name != "most_confused.json"]
    for path in jsons:
        doc = json.loads(path.read_text())
        worst = doc.get("top_losses") or doc.get("worst")
        losses = [w["loss"] for w in worst]
        assert len(worst) == 3 and losses == sorted(losses, reverse=True)
        if name in TEXT_CASES:
            assert all(w["text"].strip() for w in worst)
        if name in TABLE_CASES:
            assert all(set(w["row"]) >= set(Predictor.load(run_dir).task.columns) for w in worst)
    assert lines and lines[-1].startswith("wrote ")
