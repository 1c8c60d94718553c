#!/usr/bin/env bash
# Set up, then run fastlab's main job, the "2.6 factor" study (scripts/study.sh): pretrain a
# source model, sweep few-shot fine-tuning, fit the random-forest meta-analysis, confirm, and
# measure how stable the answer is.
#   bash scripts/run.sh [quick|full|smoke|matrix|matrix-smoke] [sweep overrides...]
# quick (the default) takes minutes; matrix (the study along data size, depth and source shift,
# and the text classifier, one cross-study report) takes at most 30 minutes on a 2-core CPU and
# says so before it starts.
# A single training run is `.venv/bin/fastlab-train [overrides]` once set up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/study.sh "$@"
