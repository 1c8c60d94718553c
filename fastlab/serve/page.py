"""The upload page served at ``GET /``: one self-contained HTML file (no network needed).

Choosing a file shows it and posts it to ``/predict``; the answer fills ``#label`` and the
``#top`` table, or ``#error``. ``#result[data-state]`` is ``idle``, ``busy``, ``done`` or
``error``, so a browser test can wait for it. Without JavaScript the form still posts.
"""

from __future__ import annotations

import html
from string import Template

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastlab: $title</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  form { margin: 1.2rem 0; display: flex; gap: .6rem; align-items: center; }
  #preview { width: 12rem; height: 12rem; object-fit: contain; image-rendering: pixelated;
             background: #eee; border: 1px solid #ccc; display: block; }
  #label { font-size: 2.4rem; font-weight: 700; }
  table { border-collapse: collapse; margin-top: .6rem; }
  td { padding: .15rem .5rem; }
  .bar { background: #3b82f6; height: .8rem; }
  #error { color: #b91c1c; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
<form id="form" action="predict" method="post" enctype="multipart/form-data">
  <input type="file" id="file" name="file" accept="image/*">
  <button type="submit" id="predict">Predict</button>
</form>
<img id="preview" alt="the uploaded image">
<div id="result" data-state="idle">
  <p>Prediction: <span id="label"></span></p>
  <table id="top"></table>
  <p id="error" role="alert"></p>
</div>
<script>
const form = document.getElementById("form"), input = document.getElementById("file");
const result = document.getElementById("result"), label = document.getElementById("label");
const table = document.getElementById("top"), error = document.getElementById("error");

async function predict() {
  const file = input.files[0];
  if (!file) { error.textContent = "choose an image file first"; result.dataset.state = "error"; return; }
  document.getElementById("preview").src = URL.createObjectURL(file);
  label.textContent = ""; table.replaceChildren(); error.textContent = "";
  result.dataset.state = "busy";
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("predict?top_k=$top_k", { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    label.textContent = answer.label;
    for (const { label: name, prob } of answer.top) {
      const row = table.insertRow(), bar = document.createElement("div");
      row.insertCell().textContent = name;
      row.insertCell().textContent = (100 * prob).toFixed(1) + "%";
      bar.className = "bar"; bar.style.width = (10 * prob).toFixed(2) + "rem";
      row.insertCell().appendChild(bar);
    }
    result.dataset.state = "done";
  } catch (e) {
    error.textContent = e.message; result.dataset.state = "error";
  }
}
input.addEventListener("change", predict);
form.addEventListener("submit", (event) => { event.preventDefault(); predict(); });
</script>
</body>
</html>
""")


def render_page(info: dict, top_k: int) -> str:
    """The page for a model described by ``Predictor.info()``."""
    classes = info.get("classes")
    what = f"{len(classes)} classes" if classes else "a regression model"
    subtitle = (f"{info['arch']} ({info['task']}, {what}), {info['size']}x{info['size']} "
                f"{'grey' if info['n_in'] == 1 else 'colour'} input. Choose an image to predict.")
    return _PAGE.substitute(title=html.escape(f"{info['arch']} {info['task']}"),
                            subtitle=html.escape(subtitle), top_k=int(top_k))
