#!/usr/bin/env bash
# A virtualenv with fastai for scripts/bench_aug.py's fastai rows, reusing fastlab's torch:
#
#   bash scripts/fastai_venv.sh [DIR]          (DIR defaults to /tmp/venv-fastai)
#   .venv/bin/python scripts/bench_aug.py --fastai-python DIR/bin/python
#
# fastai cannot go into .venv (it would pull its own torch, spacy and more), and the benchmark must
# time fastai on the very torch fastlab runs on. So the new venv sees .venv's packages through a
# .pth file (its own come first), fastai is installed without its dependencies, and then only the
# pure-Python ones that `import fastai.vision.augment` needs; torch and torchvision, numpy, scipy,
# scikit-learn, matplotlib and pillow are .venv's. spacy (fastai.text only) is left out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-/tmp/venv-fastai}"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "no $PY: run scripts/setup.sh first" >&2; exit 2; }

BASE="$("$PY" -c 'import sys; print(sys._base_executable)')"  # the interpreter .venv was made from
"$BASE" -m venv "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/fastlab-venv.pth"

"$VENV/bin/pip" install --no-deps "fastai==2.8.12"
# fastai 2.8.12's own requirements, less torch, torchvision, spacy and what .venv already has
"$VENV/bin/pip" install "fastcore>=2.2.22" "fastdownload>=0.0.8,<2" "fastprogress>=0.2.4" "fasttransform>=0.0.3" \
    "plum-dispatch<2.10" pandas requests pyyaml cloudpickle packaging

"$VENV/bin/python" - "$PY" <<'EOF'
import subprocess, sys
import fastai, torch
import fastai.vision.augment  # noqa: F401  (what bench_aug_fastai.py imports)
ours = subprocess.run([sys.argv[1], "-c", "import torch; print(torch.__version__)"], capture_output=True,
                      text=True, check=True).stdout.strip()
if torch.__version__ != ours:
    sys.exit(f"the fastai venv has torch {torch.__version__}, .venv has {ours}: it must reuse .venv's")
print(f"fastai {fastai.__version__} on torch {torch.__version__} ({torch.__file__})")
EOF
echo "use: $ROOT/.venv/bin/python scripts/bench_aug.py --fastai-python $VENV/bin/python"
