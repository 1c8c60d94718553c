#!/usr/bin/env bash
# Set up .venv with fastlab (editable) and its dev tools. Idempotent: when .venv already holds an
# install made from the current pyproject.toml this returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.fastlab-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

# torch first, on its own line: the pinned pair installs from this machine's local wheels. Where
# they are not available (another machine) any torch >= 2.4 that pip finds will do.
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  pip_install "torch==2.14.1" "torchvision==0.29.1" || pip_install "torch>=2.4" "torchvision"
fi

# editable_mode=compat: Hydra finds plugins by scanning the hydra_plugins namespace package,
# which a PEP 660 editable install hides.
pip_install --config-settings editable_mode=compat -e ".[dev]"
# hydra/launcher=ray (tests/sweep/test_ray.py): Ray comes with dev (the ray extra); the launcher is
# installed without its dependencies, because hydra-ray-launcher 1.2.2 pins cloudpickle<3 (for its
# AWS launcher alone), which joblib >= 1.5 (hydra/launcher=joblib) cannot run with.
pip_install --no-deps "hydra-ray-launcher>=1.2,<1.3"

echo "$want" > "$STAMP"
echo "fastlab is set up in $VENV"
