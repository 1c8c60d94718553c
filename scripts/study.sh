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
# matrix: the study in eight cells along three axes (labels per class 5, 10, 30, 100; layer
# groups 3, 4, 5; a far source, the glyph alphabet, against a near one, digits 0-4) and the
# ULMFiT text classifier, each its own sweep, meta report, grid and stability, then one
# cross-study report in outputs/studies/matrix (report.md, summary.json, pd_overlay.png): 200
# trials a vision cell (150 with 100 labels per class), 180 for text, at most 30 minutes on a
# 2-core CPU (docs/study.md).
# matrix-smoke: the same with 8 trials a cell (about 11 minutes from an empty zoo).
# Environment: STUDY_CELLS=g3_l10,near_g3_l10 runs only those matrix cells (and pretrains only
# their source models); STUDY_OUTPUTS=DIR puts the zoo, the runs and the sweeps under DIR instead
# of outputs/ (the tests' matrix-smoke uses both).
# Everything resumes: run it again and finished trials, grids and reports are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

outputs=${STUDY_OUTPUTS:-outputs}
budget=${1:-quick}
if [ $# -gt 0 ]; then shift; fi
case "$budget" in
  quick) trials=320;  seeds=3; dir=$outputs/sweeps/lr_ratio ;;
  full)  trials=2048; seeds=8; dir=$outputs/sweeps/lr_ratio_full ;;
  smoke) trials=16;   seeds=2; dir=$outputs/sweeps/lr_ratio_smoke ;;
  # 200 trials a vision cell: in the quick study's stability table 200 trials gave the same
  # verdict as 320 and no smaller spread of the best ratio; 150 for 100 labels per class (ten
  # times the images a trial, and its answer settled from 100 trials); docs/study.md
  matrix) trials=200; many_labels_trials=150; text_trials=180; seeds=3; root=$outputs/studies/matrix ;;
  matrix-smoke) trials=8; many_labels_trials=8; text_trials=8; seeds=2; root=$outputs/studies/matrix_smoke ;;
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
# Another zoo only when asked: a sweep resumes only with the overrides it started with.
zoo=()
[ -n "${STUDY_OUTPUTS:-}" ] && zoo=("paths.models=$outputs/models")

# pretrain NAME WHAT OVERRIDES...: a source model into the zoo, once ($outputs/models/NAME.pt).
pretrain() {
  local name=$1 what=$2; shift 2
  if [ -f "$outputs/models/$name.pt" ]; then
    echo "study: source model $name is cached ($outputs/models/$name.pt)"
    return
  fi
  echo "study: pretraining $what into the zoo as $name (once)"
  local log=$outputs/runs/study_pretrain_$name
  mkdir -p "$outputs/runs"
  "$bin/fastlab-train" "$@" "save_as=$name" "${zoo[@]}" trainer.plots=false \
    trainer.save_model=false trainer.progress=none "hydra.run.dir=$log" > "$log.log" 2>&1 || {
    tail -n 5 "$log.log" >&2
    echo "study: pretraining $name failed; its log: $log.log" >&2
    exit 2
  }
}
GLYPHS=(+experiment=pretrain_glyphs data.size=16 arch.head_hidden=64 schedule.epochs=4)

# source_model NAME: the zoo's source model NAME, pretrained when missing.
source_model() {
  case "$1" in
    glyphs16) pretrain glyphs16 "the glyph CNN (3 stages)" "${GLYPHS[@]}" 'arch.channels=[16,32,64]' ;;
    glyphs16x4) pretrain glyphs16x4 "the glyph CNN (4 stages)" "${GLYPHS[@]}" 'arch.channels=[16,32,64,128]' ;;
    digits04_16) pretrain digits04_16 "the digits 0-4 CNN (3 stages)" +experiment=pretrain_digits04 ;;
    pydocs_lm_small) pretrain pydocs_lm_small "the small pydocs language model" +experiment=pretrain_pydocs_small ;;
    *) echo "study.sh: no recipe for the source model '$1'" >&2; exit 2 ;;
  esac
}

# sweep DIR TRIALS OVERRIDES...: a resumable sweep, its output into DIR.log.
sweep() {
  local dir=$1 n=$2; shift 2
  mkdir -p "$(dirname "$dir")"
  "$bin/fastlab-train" -m "hydra.sweep.dir=$dir" "hydra.sweeper.n_trials=$n" "${launcher[@]}" \
    "${zoo[@]}" "$@" > "$dir.log" 2>&1 || {
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
  # 1. The source model, at the study's architecture and image size (conf/study/lr_ratio.yaml).
  echo "study: 1/3 the glyph source model"
  source_model glyphs16
  echo "study: 2/3 sweeping $trials trials into $dir ($jobs workers)"
  sweep "$dir" "$trials" +study=lr_ratio "$@"
  swept=$(( $(date +%s) - start ))
  echo "study: 3/3 meta-analysis, confirmation grid and stability"
  meta "$dir" "$dir/meta"
  echo "study: $trials trials in ${swept} s, the whole study in $(( $(date +%s) - start )) s"
  exit 0
fi

# The matrix, cells in the order of their axes. Each cell:
# NAME|LABEL|TASK|GROUPS|LABELS PER CLASS|AXES|SOURCE|SHIFT|SOURCE MODEL|TRIALS|fastlab-train overrides.
# AXES: the axes a cell lies on (g3_l10, the shared base, lies on all three); SOURCE: what the
# source model learned; SHIFT: far (glyphs) or near (digits 0-4) to the target, digits 5-9;
# TRIALS: which of the budget's trial counts the cell sweeps.
CELLS=(
  "g3_l5|vision, 3 groups, 5 labels|vision|3|5|labels|glyphs|far|glyphs16|trials|+study=lr_ratio data.train_per_class=5"
  "g3_l10|vision, 3 groups, 10 labels|vision|3|10|labels,depth,shift|glyphs|far|glyphs16|trials|+study=lr_ratio"
  "g3_l30|vision, 3 groups, 30 labels|vision|3|30|labels|glyphs|far|glyphs16|trials|+study=lr_ratio data.train_per_class=30"
  "g3_l100|vision, 3 groups, 100 labels|vision|3|100|labels|glyphs|far|glyphs16|many_labels_trials|+study=lr_ratio data.train_per_class=100"
  "g4_l10|vision, 4 groups, 10 labels|vision|4|10|depth|glyphs|far|glyphs16|trials|+study=lr_ratio arch.groups=stages"
  "g5_l10|vision, 5 groups, 10 labels|vision|5|10|depth|glyphs|far|glyphs16x4|trials|+study=lr_ratio arch.groups=stages arch.channels=[16,32,64,128] arch.pretrained=glyphs16x4"
  "near_g3_l10|vision, 3 groups, 10 labels, near source (digits 0-4)|vision|3|10|shift|digits 0-4|near|digits04_16|trials|+study=lr_ratio arch.pretrained=digits04_16"
  "text|text (AWD-LSTM), 5 groups|text|5|null||pydocs|null|pydocs_lm_small|text_trials|+study=lr_ratio_text"
)
# STUDY_CELLS: a subset, by name (the tests' matrix-smoke runs two cells).
if [ -n "${STUDY_CELLS:-}" ]; then
  names=" $(printf '%s ' "${CELLS[@]%%|*}")"
  chosen=()
  for want in ${STUDY_CELLS//,/ }; do
    case "$names" in
      *" $want "*) for spec in "${CELLS[@]}"; do [ "${spec%%|*}" = "$want" ] && chosen+=("$spec"); done ;;
      *) echo "study.sh: STUDY_CELLS names '$want', which is no matrix cell: use some of${names% }" >&2
         exit 2 ;;
    esac
  done
  CELLS=("${chosen[@]}")
fi
steps=$(( ${#CELLS[@]} + 2 ))
echo "study: the matrix: ${#CELLS[@]} cells of $trials trials ($many_labels_trials with 100 labels" \
     "per class, $text_trials for text), each with" \
     "its meta report, confirmation grid and stability, then one cross-study report in $root."
[ "$budget" = matrix ] && [ -z "${STUDY_CELLS:-}" ] && echo "study: this takes 25-30 minutes" \
  "on a 2-core CPU (longer on a busy one); it resumes where it stopped when run again."
mkdir -p "$root"
echo "study: step 1/$steps source models"
models=" "
for spec in "${CELLS[@]}"; do
  IFS='|' read -r _ _ _ _ _ _ _ _ model _ _ <<< "$spec"
  case "$models" in *" $model "*) ;; *) models+="$model "; source_model "$model" ;; esac
done
step=1
for spec in "${CELLS[@]}"; do
  IFS='|' read -r name label task groups labels axes source distance _ count overrides <<< "$spec"
  step=$(( step + 1 ))
  cell="$root/$name"
  mkdir -p "$cell"
  n=${!count}
  axis=""
  [ -n "$axes" ] && axis="\"${axes//,/\", \"}\""
  [ "$distance" = null ] || distance="\"$distance\""
  printf '{"name": "%s", "label": "%s", "task": "%s", "groups": %s, "labels": %s, "axis": [%s], "source": "%s", "shift": %s, "order": %d, "overrides": "%s"}\n' \
    "$name" "$label" "$task" "$groups" "$labels" "$axis" "$source" "$distance" "$step" "$overrides" > "$cell/cell.json"
  if [ -f "$cell/meta/.done" ]; then
    echo "study: step $step/$steps $label: done before (delete $cell/meta/.done to redo)"
    continue
  fi
  t0=$(date +%s)
  echo "study: step $step/$steps $label: sweeping $n trials into $cell/sweep"
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
echo "study: step $steps/$steps the cross-study report"
"$bin/fastlab-meta" --matrix "$root"
echo "study: the matrix in $(( $(date +%s) - start )) s"
