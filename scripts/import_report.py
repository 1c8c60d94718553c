"""How fastlab's modules import each other: import circles, and imports that break the layers.

    .venv/bin/python scripts/import_report.py [--root DIR]

Reads the package with grimp (which import-linter installs), imports inside functions included and
typing-only ones left out, and prints: the strongly connected groups of modules (each an import
circle), every import from a lower layer to a higher one by the layering of docs/design.md (the
ranks below, which also place the names of earlier layouts), and the largest modules by lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Rank of each part of the package, lowest first: the layers of pyproject's import-linter contract
# (docs/design.md §2, the floor plan). A module takes the rank of its longest matching prefix.
# Earlier layouts' names are placed where their code lived (fastlab.train and the commands at the
# top, tracking.sweep with the sweep), so a tree from before the floor plan is measured by the
# same rule.
RANKS = {
    0: ["fastlab.errors", "fastlab.registry", "fastlab.config", "fastlab.context", "fastlab.sweepdir",
        "fastlab.rundir", "fastlab.pruning", "fastlab.rng", "fastlab.guards", "fastlab.accel", "fastlab.metrics",
        "fastlab.tracking", "fastlab.fetch", "fastlab.__init__", "fastlab"],
    # a saved model without PyTorch (an ONNX bundle on onnxruntime): NumPy and Pillow over the ground
    0.5: ["fastlab.portable"],
    1: ["fastlab.data", "fastlab.plots"],
    2: ["fastlab.models"],
    3: ["fastlab.tasks"],
    4: ["fastlab.learner", "fastlab.callbacks", "fastlab.schedules", "fastlab.optimizer", "fastlab.lr_find",
        "fastlab.tta", "fastlab.diagnostics", "fastlab.distributed", "fastlab.inference", "fastlab.interpret",
        "fastlab.tracking.mlflow_logger"],
    5: ["fastlab.run", "fastlab.prepare"],
    6: ["fastlab.serve"],
    7: ["fastlab.sweep", "fastlab.tracking.sweep"],
    8: ["fastlab.analysis", "fastlab.meta"],
    9: ["fastlab.cli", "fastlab.train", "fastlab.predict", "fastlab.export", "fastlab.meta.cli",
        "fastlab.serve.__init__", "fastlab.serve.__main__"],
}


def rank(module: str) -> int:
    best, found = -1, 0
    for r, prefixes in RANKS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), r
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="the checkout to measure")
    args = p.parse_args()
    sys.path.insert(0, args.root)
    import grimp

    g = grimp.build_graph("fastlab", exclude_type_checking_imports=True)
    modules = sorted(m for m in g.modules if m.startswith("fastlab"))
    edges = {m: {i for i in g.find_modules_directly_imported_by(m) if i.startswith("fastlab")} for m in modules}
    # Tarjan's strongly connected components: each group of two or more is an import circle.
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for m in modules:
        if m not in index:
            visit(m)
    up = sorted((a, b) for a in modules for b in edges[a] if rank(b) > rank(a))
    print(f"import circles: {len(groups)}")
    for group in groups:
        print("  " + " <-> ".join(group))
    print(f"imports that climb the layers: {len(up)}")
    for a, b in up:
        print(f"  {a} ({rank(a)}) -> {b} ({rank(b)})")
    sizes = sorted(((sum(1 for _ in open(f, encoding="utf-8")), str(f.relative_to(args.root)))
                    for f in Path(args.root, "fastlab").rglob("*.py")), reverse=True)[:8]
    print("largest modules: " + ", ".join(f"{name} {n}" for n, name in sizes))


if __name__ == "__main__":
    main()
