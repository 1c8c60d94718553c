#!/usr/bin/env bash
# The "2.6 factor" study, end to end:  bash scripts/study.sh [quick|full|smoke|matrix|matrix-smoke] [overrides...]
#   1. pretrain the source model (the generated glyph alphabet) into the model zoo as glyphs16,
#      skipped when outputs/models/glyphs16.pt exists;
#   2. sweep few-shot fine-tuning on digits 5-9 (conf/study/lr_ratio.yaml): Sobol trials over the
#      lr ratio, the head rate, epochs, freezing, batch size, weight decay and warm-up;
#   3. fastlab-meta: OOB R^2, importances, the ratio's optimum with its interval, the 2-D
#      conditional optimum, 4. the confirmation grid (recommended vs neutral ratio, each at
#      several head rates and seeds) and 5. the stability of the answer over subsamples.
# Budgets: quick (default; 320 trials, within 10 minutes on a 2-core CPU), full (2048 trials,
# 8 seeds per grid cell; for many cores or a GPU), smoke (16 trials: checks the pipeline in a
# minute or two). Extra arguments are fastlab-train overrides for the sweep.
# matrix: the study in five cells (vision with 3, 4 and 5 layer groups; 10 and 30 labels per
# class; the ULMFiT text classifier), each its own sweep, meta report, grid and stability, then
# one cross-study report in outputs/studies/matrix (report.md, summary.json, pd_overlay.png):
# about 20-30 minutes on a 2-core CPU. matrix-smoke: the same with 12 trials a cell (minutes).
# Everything resumes: run it again and finished trials, grids and reports are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

budget=${1:-quick}
if [ $# -gt 0 ]; then shift; fi
case "$budget" in
  quick) trials=320;  seeds=3; dir=outputs/sweeps/lr_ratio ;;
  full)  trials=2048; seeds=8; dir=outputs/sweeps/lr_ratio_full ;;
  smoke) trials=16;   seeds=2; dir=outputs/sweeps/lr_ratio_smoke ;;
  matrix) trials=320; text_trials=300; seeds=3; root=outputs/studies/matrix ;;
  matrix-smoke) trials=12; text_trials=12; seeds=2; root=outputs/studies/matrix_smoke ;;
  *) echo "study.sh: budget '$budget' is not known: use quick, full, smoke, matrix or matrix-smoke" >&2
     exit 2 ;;
esac
bin=.venv/bin
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)
# One worker per core, one thread per worker (N processes x N threads would fight over N cores
# and run slower than N single-threaded ones).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
launcher=(hydra/launcher=joblib "hydra.launcher.n_jobs=$jobs")

# pretrain NAME WHAT OVERRIDES...: a source model into the zoo, once (outputs/models/NAME.pt).
pretrain() {
  local name=$1 what=$2; shift 2
  if [ -f "outputs/models/$name.pt" ]; then
    echo "study: source model $name is cached (outputs/models/$name.pt)"
    return
  fi
  echo "study: pretraining $what into the zoo as $name (once)"
  "$bin/fastlab-train" "$@" "save_as=$name" trainer.plots=false trainer.save_model=false \
    trainer.progress=none "hydra.run.dir=outputs/runs/study_pretrain_$name" \
    > "outputs/runs/study_pretrain_$name.log" 2>&1 || {
    tail -n 5 "outputs/runs/study_pretrain_$name.log" >&2
    echo "study: pretraining $name failed; its log: outputs/runs/study_pretrain_$name.log" >&2
    exit 2
  }
}
GLYPHS=(+experiment=pretrain_glyphs data.size=16 arch.head_hidden=64 schedule.epochs=4)

# sweep DIR TRIALS OVERRIDES...: a resumable sweep, its output into DIR.log.
sweep() {
  local dir=$1 n=$2; shift 2
  mkdir -p "$(dirname "$dir")"
  "$bin/fastlab-train" -m "hydra.sweep.dir=$dir" "hydra.sweeper.n_trials=$n" "${launcher[@]}" \
    "$@" > "$dir.log" 2>&1 || {
    tail -n 5 "$dir.log" >&2
    echo "study: the sweep stopped; its log: $dir.log" >&2
    exit 2
  }
}

# meta DIR OUT: the meta-analysis, the confirmation grid and the stability of the answer.
meta() {
  "$bin/fastlab-meta" "$1" --out "$2" --focus schedule.lr_ratio --reference 2.6 --confirm \
    --stability --confirm-seeds "$seeds" --confirm-override hydra/launcher=joblib \
    --confirm-override "hydra.launcher.n_jobs=$jobs"
}

if [ -z "${root:-}" ]; then
  mkdir -p outputs/runs
  # 1. The source model, at the study's architecture and image size (conf/study/lr_ratio.yaml).
  echo "study: 1/3 the glyph source model"
  pretrain glyphs16 "the glyph CNN (3 stages)" "${GLYPHS[@]}" 'arch.channels=[16,32,64]'
  echo "study: 2/3 sweeping $trials trials into $dir ($jobs workers)"
  sweep "$dir" "$trials" +study=lr_ratio "$@"
  swept=$(( $(date +%s) - start ))
  echo "study: 3/3 meta-analysis, confirmation grid and stability"
  meta "$dir" "$dir/meta"
  echo "study: $trials trials in ${swept} s, the whole study in $(( $(date +%s) - start )) s"
  exit 0
fi

# The matrix. Each cell: NAME|LABEL|TASK|GROUPS|LABELS PER CLASS|fastlab-train overrides.
echo "study: the matrix: 5 cells of $trials trials ($text_trials for text), each with its meta" \
     "report, confirmation grid and stability, then one cross-study report in $root."
[ "$budget" = matrix ] && echo "study: this takes about 20-30 minutes on a 2-core CPU" \
  "(longer on a busy one); it resumes where it stopped when run again."
CELLS=(
  "g3_l10|vision, 3 groups, 10 labels|vision|3|10|+study=lr_ratio"
  "g4_l10|vision, 4 groups, 10 labels|vision|4|10|+study=lr_ratio arch.groups=stages"
  "g5_l10|vision, 5 groups, 10 labels|vision|5|10|+study=lr_ratio arch.groups=stages arch.channels=[16,32,64,128] arch.pretrained=glyphs16x4"
  "g3_l30|vision, 3 groups, 30 labels|vision|3|30|+study=lr_ratio data.train_per_class=30"
  "text|text (AWD-LSTM), 5 groups|text|5|null|+study=lr_ratio_text"
)
mkdir -p "$root" outputs/runs
echo "study: source models (1 of $(( ${#CELLS[@]} + 2 )) steps)"
pretrain glyphs16 "the glyph CNN (3 stages)" "${GLYPHS[@]}" 'arch.channels=[16,32,64]'
pretrain glyphs16x4 "the glyph CNN (4 stages)" "${GLYPHS[@]}" 'arch.channels=[16,32,64,128]'
pretrain pydocs_lm_small "the small pydocs language model" +experiment=pretrain_pydocs_small
step=1
for spec in "${CELLS[@]}"; do
  IFS='|' read -r name label task groups labels overrides <<< "$spec"
  step=$(( step + 1 ))
  cell="$root/$name"
  mkdir -p "$cell"
  n=$trials
  [ "$task" = text ] && n=$text_trials
  printf '{"name": "%s", "label": "%s", "task": "%s", "groups": %s, "labels": %s, "order": %d, "overrides": "%s"}\n' \
    "$name" "$label" "$task" "$groups" "$labels" "$step" "$overrides" > "$cell/cell.json"
  if [ -f "$cell/meta/.done" ]; then
    echo "study: step $step/$(( ${#CELLS[@]} + 2 )) $label: done before (delete $cell/meta/.done to redo)"
    continue
  fi
  t0=$(date +%s)
  echo "study: step $step/$(( ${#CELLS[@]} + 2 )) $label: sweeping $n trials into $cell/sweep"
  # shellcheck disable=SC2086  # the overrides are words on purpose
  sweep "$cell/sweep" "$n" $overrides "$@"
  t1=$(date +%s)
  echo "study:   swept in $(( t1 - t0 )) s; meta-analysis, confirmation grid, stability"
  meta "$cell/sweep" "$cell/meta" > "$cell/meta.log" 2>&1 || {
    tail -n 5 "$cell/meta.log" >&2
    echo "study: the meta-analysis of $name stopped; its log: $cell/meta.log" >&2
    exit 2
  }
  touch "$cell/meta/.done"
  echo "study:   $label done in $(( $(date +%s) - t0 )) s (meta $(( $(date +%s) - t1 )) s): $cell/meta/report.md"
done
echo "study: step $(( ${#CELLS[@]} + 2 ))/$(( ${#CELLS[@]} + 2 )) the cross-study report"
"$bin/fastlab-meta" --matrix "$root"
echo "study: the matrix in $(( $(date +%s) - start )) s"
