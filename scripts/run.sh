#!/usr/bin/env bash
# Set up, then train the default run (or whatever the overrides say): bash scripts/run.sh [k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fastlab-train "$@"
