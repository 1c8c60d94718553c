#!/usr/bin/env bash
# The "2.6 factor" study, end to end:  bash scripts/study.sh [quick|full|smoke] [overrides...]
#   1. pretrain the source model (the generated glyph alphabet) into the model zoo as glyphs16,
#      skipped when outputs/models/glyphs16.pt exists;
#   2. sweep few-shot fine-tuning on digits 5-9 (conf/study/lr_ratio.yaml): Sobol trials over the
#      lr ratio, the head rate, epochs, freezing, batch size, weight decay and warm-up;
#   3. fastlab-meta: OOB R^2, importances, the ratio's optimum with its interval, the 2-D
#      conditional optimum, and 4. the confirmation grid (recommended vs neutral ratio, each at
#      several head rates and seeds).
# Budgets: quick (default; 320 trials, within 10 minutes on a 2-core CPU), full (2048 trials,
# 8 seeds per grid cell; for many cores or a GPU), smoke (16 trials: checks the pipeline in a
# minute or two). Extra arguments are fastlab-train overrides for the sweep. Everything resumes:
# run it again and finished trials are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

budget=${1:-quick}
if [ $# -gt 0 ]; then shift; fi
case "$budget" in
  quick) trials=320;  seeds=3; dir=outputs/sweeps/lr_ratio ;;
  full)  trials=2048; seeds=8; dir=outputs/sweeps/lr_ratio_full ;;
  smoke) trials=16;   seeds=2; dir=outputs/sweeps/lr_ratio_smoke ;;
  *) echo "study.sh: budget '$budget' is not known: use quick, full or smoke" >&2; exit 2 ;;
esac
bin=.venv/bin
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)

# 1. The source model, at the study's architecture and image size (conf/study/lr_ratio.yaml).
if [ ! -f outputs/models/glyphs16.pt ]; then
  echo "study: 1/3 pretraining the glyph source model (once; cached in outputs/models/glyphs16.pt)"
  "$bin/fastlab-train" +experiment=pretrain_glyphs data.size=16 'arch.channels=[16,32,64]' \
    arch.head_hidden=64 schedule.epochs=4 save_as=glyphs16 trainer.plots=false \
    trainer.save_model=false trainer.progress=none hydra.run.dir=outputs/runs/study_pretrain
fi

# 2. The sweep: one worker per core, one thread per worker (N processes x N threads would fight
# over N cores and run slower than N single-threaded ones).
echo "study: 2/3 sweeping $trials trials into $dir ($jobs workers)"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$(dirname "$dir")"
launcher=(hydra/launcher=joblib "hydra.launcher.n_jobs=$jobs")
"$bin/fastlab-train" -m +study=lr_ratio "hydra.sweep.dir=$dir" "hydra.sweeper.n_trials=$trials" \
  "${launcher[@]}" "$@" > "$dir.log" 2>&1 || {
  tail -n 5 "$dir.log" >&2
  echo "study: the sweep stopped; its log: $dir.log" >&2
  exit 2
}
swept=$(( $(date +%s) - start ))

# 3. The meta-analysis and the confirmation grid.
echo "study: 3/3 meta-analysis and confirmation grid"
"$bin/fastlab-meta" "$dir" --focus schedule.lr_ratio --reference 2.6 --confirm \
  --confirm-seeds "$seeds" --confirm-override hydra/launcher=joblib \
  --confirm-override "hydra.launcher.n_jobs=$jobs"
echo "study: $trials trials in ${swept} s, the whole study in $(( $(date +%s) - start )) s"
