#!/usr/bin/env bash
# Set up, then run fastlab's main job, the "2.6 factor" study (scripts/study.sh): pretrain a
# source model, sweep few-shot fine-tuning, fit the random-forest meta-analysis, confirm.
#   bash scripts/run.sh [quick|full|smoke] [sweep overrides...]
# A single training run is `.venv/bin/fastlab-train [overrides]` once set up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/study.sh "$@"
