"""The page served at ``GET /``: one self-contained HTML file (no network needed).

The input control follows the model's ``input`` kind (``Predictor.info()``): an image chooser,
a text box, or a CSV chooser / JSON row box. The answer is drawn from the fields it has, whatever
the task: ``label``; ``top`` as bars; ``mask_png`` over the image (segmentation) with the
``pixels`` per code; ``points`` drawn on the image; ``next_words``; ``predictions`` (table rows) as
a table. ``#result[data-state]`` is ``idle``, ``busy``, ``done`` or ``error``, so a browser test
can wait for it. The image and its overlays stay hidden until there is one (no broken image).
Without JavaScript the form still posts.
"""

from __future__ import annotations

import html
import json
from string import Template

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastlab: $title</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  form { margin: 1.2rem 0; display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
  textarea { width: 100%; min-height: 6rem; font: inherit; }
  #stage { position: relative; width: 12rem; height: 12rem; }
  /* object-fit: fill shows the image squashed to a square, as the model saw it, so overlays line up */
  #stage img, #stage canvas { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: fill;
                              image-rendering: pixelated; }
  #preview { background: #eee; border: 1px solid #ccc; box-sizing: border-box; }
  #mask { opacity: .55; }
  [hidden] { display: none !important; }
  #label { font-size: 2rem; font-weight: 700; }
  table { border-collapse: collapse; margin-top: .6rem; }
  td, th { padding: .15rem .5rem; text-align: left; }
  .bar { background: #3b82f6; height: .8rem; }
  #error { color: #b91c1c; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
<form id="form" action="predict" method="post" enctype="multipart/form-data">
  $control
  <button type="submit" id="predict">Predict</button>
</form>
<div id="stage" hidden>
  <img id="preview" alt="the uploaded image" hidden>
  <img id="mask" alt="the predicted mask" hidden>
  <canvas id="overlay" width="240" height="240" hidden></canvas>
</div>
<div id="result" data-state="idle">
  <p>Prediction: <span id="label"></span></p>
  <table id="top"></table>
  <p id="error" role="alert"></p>
</div>
<script>
const KIND = $kind;
const form = document.getElementById("form"), input = document.getElementById("file");
const text = document.getElementById("text");
const result = document.getElementById("result"), label = document.getElementById("label");
const table = document.getElementById("top"), error = document.getElementById("error");
const stage = document.getElementById("stage"), preview = document.getElementById("preview");
const mask = document.getElementById("mask"), overlay = document.getElementById("overlay");

function row(cells) {
  const tr = table.insertRow();
  for (const c of cells) { const td = tr.insertCell(); if (c instanceof Node) td.appendChild(c); else td.textContent = c; }
}
function bar(p) { const d = document.createElement("div"); d.className = "bar"; d.style.width = (10 * p).toFixed(2) + "rem"; return d; }

function show(answer) {
  label.textContent = answer.label ?? "";
  for (const { label: name, prob } of answer.top || []) row([name, (100 * prob).toFixed(1) + "%", bar(prob)]);
  if (answer.next_words) row(["next words", answer.next_words.join(" ")]);
  if (answer.pixels) {
    const total = Object.values(answer.pixels).reduce((a, b) => a + b, 0) || 1;
    for (const [code, n] of Object.entries(answer.pixels)) if (n) row([code, n + " px", bar(n / total)]);
  }
  if (answer.mask_png) { mask.src = "data:image/png;base64," + answer.mask_png; mask.hidden = false; }
  if (answer.points) {
    const g = overlay.getContext("2d"), w = overlay.width, h = overlay.height;
    g.clearRect(0, 0, w, h); g.fillStyle = "red"; g.strokeStyle = "black";
    for (const [x, y] of answer.points) {  // [-1, 1]: (-1, -1) is the top-left corner
      g.beginPath(); g.arc((x + 1) / 2 * w, (y + 1) / 2 * h, 6, 0, 2 * Math.PI); g.fill(); g.stroke();
    }
    overlay.hidden = false;
  }
  if (answer.predictions) {
    label.textContent = answer.predictions.length + " rows";
    answer.predictions.forEach((p, i) => row(["row " + (i + 1), p.label, p.top && p.top.length ? (100 * p.top[0].prob).toFixed(1) + "%" : ""]));
  }
}

async function predict() {
  let request;
  if (KIND === "text" || (KIND === "table" && text && text.value.trim() && !(input && input.files[0]))) {
    const value = text.value;
    if (!value.trim()) { error.textContent = "type some text first"; result.dataset.state = "error"; return; }
    let body;
    try { body = KIND === "text" ? { text: value } : { row: JSON.parse(value) }; }
    catch (e) { error.textContent = "the row must be JSON, e.g. {\\"age\\": 39}"; result.dataset.state = "error"; return; }
    request = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  } else {
    const file = input.files[0];
    if (!file) { error.textContent = "choose a file first"; result.dataset.state = "error"; return; }
    if (KIND === "image") {
      preview.src = URL.createObjectURL(file); preview.hidden = false; stage.hidden = false;
    }
    const body = new FormData();
    body.append("file", file);
    request = { method: "POST", body };
  }
  mask.hidden = true; overlay.hidden = true;
  label.textContent = ""; table.replaceChildren(); error.textContent = "";
  result.dataset.state = "busy";
  try {
    const response = await fetch("predict?top_k=$top_k", request);
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    show(answer);
    result.dataset.state = "done";
  } catch (e) {
    error.textContent = e.message; result.dataset.state = "error";
  }
}
if (input) input.addEventListener("change", predict);
form.addEventListener("submit", (event) => { event.preventDefault(); predict(); });
</script>
</body>
</html>
""")

_CONTROLS = {
    "image": '<input type="file" id="file" name="file" accept="image/*">',
    "text": '<textarea id="text" name="text" placeholder="type or paste a text"></textarea>',
    "table": ('<input type="file" id="file" name="file" accept=".csv,.json,text/csv,application/json">'
              '<textarea id="text" name="row" placeholder=\'or one row as JSON, e.g. {"column": value}\'></textarea>'),
}


def render_page(info: dict, top_k: int) -> str:
    """The page for a model described by ``Predictor.info()``."""
    kind = info.get("input", "image")
    classes = info.get("classes")
    if kind == "image":
        what = (f"{len(classes)} {'codes' if info.get('codes') else 'classes'}" if classes else "a regression model")
        reads = f"{info['size']}x{info['size']} {'grey' if info['n_in'] == 1 else 'colour'} input. Choose an image to predict."
    elif kind == "text":
        what = f"{len(classes)} classes" if classes else "next words"
        reads = "Type a text to predict."
    else:
        what = f"{len(classes)} classes" if classes else f"predicts {info.get('target')}"
        reads = f"Choose a CSV with the columns {', '.join(info.get('columns', []))}, or type one row as JSON."
    subtitle = f"{info['arch']} ({info['task']}, {what}), {reads}"
    return _PAGE.substitute(title=html.escape(f"{info['arch']} {info['task']}"), subtitle=html.escape(subtitle),
                            top_k=int(top_k), kind=json.dumps(kind), control=_CONTROLS[kind])
