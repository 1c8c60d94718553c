"""What every benchmark script prints and writes: a Markdown table and a JSON file of figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows[0]`` is the header; every column padded to its widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_figures(res: dict, path: str | Path) -> None:
    """The figures as JSON at ``path`` (folders made), and a line saying where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"figures written to {out}")
