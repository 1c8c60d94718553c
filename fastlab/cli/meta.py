"""``fastlab-meta PATH``: the random-forest meta-analysis of a sweep, as a report dir.

    fastlab-meta outputs/sweeps/lr_ratio --focus schedule.lr_ratio --reference 2.6
    fastlab-meta outputs/sweeps/2026-01-01/12-00-00 --out meta --apply lr_ratio_tuned
    fastlab-meta outputs/sweeps/lr_ratio --reference 2.6 --confirm     # then a controlled grid
    fastlab-meta outputs/sweeps/lr_ratio --focus lr_low \
        --derive 'lr_low=schedule.lr_max/schedule.lr_ratio**(layer_groups-1)'
    fastlab-meta outputs/sweeps/small --metric n_params     # another of several objectives

Errors the user can cause end with one line naming the thing and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastlab.analysis.forest.derive import parse_derive
from fastlab.analysis.forest.encode import DIVERGED_POLICIES
from fastlab.analysis.report.progress import ProgressLine
from fastlab.analysis.sources import default_out, read_trials, tracker_source
from fastlab.analysis.sources.direction import DIRECTIONS
from fastlab.analysis.sources.table import INFEASIBLE_POLICIES, PRUNED_POLICIES
from fastlab.cli import run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastlab-meta",
        description="Random-forest meta-analysis of a sweep: which hyperparameters matter, and "
                    "where the focus parameter's best value lies (with a bootstrap interval).")
    p.add_argument("path", type=_source, help="a fastlab sweep dir (trials.db or storage.json), any Hydra "
                   "multirun dir (job dirs with .hydra/overrides.yaml and metrics.json), "
                   "mlflow:EXPERIMENT[#PARENT_RUN] (the store at $MLFLOW_TRACKING_URI, else "
                   "sqlite:///outputs/mlruns/mlflow.db) or optuna:STORAGE_URL[#STUDY], e.g. "
                   "'optuna:sqlite:///study.db#my_study'")
    p.add_argument("--metric", default=None, help="the response to analyse: for a sweep of "
                   "several objectives (hydra.sweeper.objectives) one of them, with its direction "
                   "(default: the first); else a number of the trials' metrics.json (a top-level "
                   "one, final.<NAME> or a dotted path; --direction unless it is the objective); "
                   "with mlflow:... the metric (default: objective, which fastlab's runs log)")
    p.add_argument("--focus", default=None, help="the parameter to recommend a value for "
                   "(default: schedule.lr_ratio when swept, else the most important numeric one)")
    p.add_argument("--reference", type=float, default=None,
                   help="a value to test against the interval, e.g. 2.6 (ULMFiT's ratio)")
    p.add_argument("--neutral", type=float, default=None, help="the focus value that does "
                   "nothing, to measure the gain against (default: 1 for schedule.lr_ratio)")
    p.add_argument("--derive", action="append", default=[], metavar="NAME=EXPR",
                   help="a column computed from others and analysed like a parameter, e.g. "
                        "'lr_low=schedule.lr_max/schedule.lr_ratio**(layer_groups-1)': numbers, "
                        "numeric parameters by override name, metrics.json's top-level numbers, "
                        "+ - * / **, log log10 exp sqrt min max abs (repeatable; then --focus "
                        "NAME to recommend its value). It replaces the last swept parameter it "
                        "reads that is not the focus, so no column is a function of others")
    p.add_argument("--no-mechanism", dest="mechanism", action="store_false",
                   help="skip the mechanism test (with the focus on schedule.lr_ratio and the "
                        "runs' layer_groups recorded: does the ratio itself or only the lowest "
                        "group's rate carry the effect? the ratio is judged in the basis that does)")
    p.add_argument("--level", type=float, default=0.9, help="interval coverage (default 0.9)")
    p.add_argument("--margin", type=float, default=None,
                   help="the smallest gain of the objective that counts, in its units: a clear "
                        "optimum's gain interval must lie above it, and a value is non-inferior "
                        "when what it loses lies below it (default: the seed noise of a sweep "
                        "with hydra.sweeper.repeats, else of the --confirm grid, else 0.5%% of the "
                        "trials' median |objective|)")
    p.add_argument("--direction", choices=DIRECTIONS, default=None,
                   help="of the objective (default: what the sweep recorded: trials.db, or the "
                        "jobs' metrics.json)")
    p.add_argument("--diverged", choices=DIVERGED_POLICIES, default="worst",
                   help="diverged trials: score them as the worst completed value (default) or "
                        "leave them out; failed trials are always left out")
    p.add_argument("--pruned", choices=PRUNED_POLICIES, default="drop",
                   help="trials a sweep's pruner stopped early: leave them out (default) or keep "
                        "them, scored by their last value, with the epochs they trained as a feature")
    p.add_argument("--infeasible", choices=INFEASIBLE_POLICIES, default="keep",
                   help="trials that broke a sweep's hydra.sweeper.constraints: keep them "
                        "(default: their objectives are measured all the same) or leave them out")
    p.add_argument("--out", type=Path, default=None, help="report dir (default: PATH/meta)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap refits (default 100)")
    p.add_argument("--trees", type=int, default=300, help="trees of the main forest (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random_state of every forest and resample")
    p.add_argument("--jobs", type=int, default=None, help="parallel jobs per forest (default 1)")
    p.add_argument("--apply", metavar="NAME", default=None,
                   help="also write the recommendation as conf/schedule/NAME.yaml "
                        "(then: fastlab-train schedule=NAME)")
    p.add_argument("--conf-dir", type=Path, default=None,
                   help="the config dir --apply writes into (default: fastlab's own conf/)")
    p.add_argument("--confirm", action="store_true",
                   help="then run a controlled grid through the fastlab sweeper: the recommended "
                        "and the neutral value, each at several head rates and seeds")
    p.add_argument("--confirm-seeds", type=int, default=3, help="seeds per grid cell (default 3)")
    p.add_argument("--confirm-lrs", type=_floats, default=None, metavar="LR,LR,...",
                   help="the grid's head rates (default: around each arm's best schedule.lr_max)")
    p.add_argument("--confirm-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra fastlab-train override for the grid, e.g. hydra/launcher=joblib "
                        "(repeatable)")
    p.add_argument("--stability", action="store_true",
                   help="also refit on random subsamples of the trials (50, 100, 200, all) and "
                        "report how far the best value and the verdict move (report.md "
                        "'Stability', summary.json 'stability')")
    p.add_argument("--matrix", action="store_true",
                   help="PATH is a study matrix dir (scripts/study.sh matrix): build the "
                        "cross-study report from its cells' meta outputs into PATH (or --out)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _source(text: str) -> Path | str:
    """A dir as a Path; a tracker's study (mlflow:..., optuna:...) as typed (a Path would fold
    the slashes of sqlite:///)."""
    return text if tracker_source(text) else Path(text)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, "
                                         "e.g. 1e-3,3e-3,1e-2") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive rates, e.g. 1e-3,3e-3,1e-2")
    return values


def _conf_dir(args: argparse.Namespace) -> Path:
    if args.conf_dir is not None:
        return args.conf_dir
    from fastlab.config import config_dir

    return config_dir()


def run(args: argparse.Namespace) -> int:
    if args.matrix:  # the cross-study report reads the cells' reports; it fits nothing
        from fastlab.analysis.study.matrix import run_matrix

        return run_matrix(args.path, args.out)
    if args.apply:  # a bad preset name fails before minutes of analysis, not after
        from fastlab.analysis.study.preset import preset_path

        preset_path(args.apply, _conf_dir(args))
    for spec in args.derive:  # a malformed expression fails before the trials are read
        parse_derive(spec)
    table = read_trials(args.path, args.metric)
    # scikit-learn and matplotlib load only once there is something to analyse
    from fastlab.analysis.forest.analysis import MetaAnalysis
    from fastlab.analysis.report.markdown import conclusion, write_report

    neutral = "auto" if args.neutral is None else args.neutral
    m = MetaAnalysis(focus=args.focus, level=args.level, neutral=neutral,
                     reference=args.reference, direction=args.direction, diverged=args.diverged,
                     pruned=args.pruned, infeasible=args.infeasible,
                     n_estimators=args.trees, n_boot=args.n_boot, random_state=args.seed,
                     n_jobs=args.jobs, derive=tuple(args.derive), margin=args.margin,
                     mechanism=args.mechanism,
                     progress=None if args.quiet else ProgressLine("fastlab-meta: bootstrap"))
    m.fit(table)
    out = args.out if args.out is not None else default_out(args.path)
    summary = write_report(m, out)
    if args.confirm:
        from fastlab.analysis.study.confirm import confirm, grid_margin

        result = confirm(m, out, args.confirm_seeds, args.confirm_lrs, args.confirm_override,
                         args.quiet)
        measured = grid_margin(result)
        # the grid's seed noise replaces the stated default margin (--margin and a sweep's
        # repeats come first): judged again, no refit
        if measured is not None and args.margin is None and not (table.replicates or {}).get("sd"):
            m.set_margin(*measured)
        summary = write_report(m, out, confirmation=result)
    if args.stability:
        from fastlab.analysis.study.stability import stability

        summary = write_report(m, out, confirmation=summary.get("confirmation"),
                               stability=stability(m, table, seed=args.seed))
    print(f"fastlab-meta: report: {out / 'report.md'} (summary.json and figures beside it)")
    for w in summary["warnings"]:
        print(f"fastlab-meta: warning: {w}", file=sys.stderr)
    print(conclusion(summary).replace("**", "").replace("  \n", "\n"))
    if args.apply:
        from fastlab.analysis.study.preset import write_preset

        path = write_preset(m, args.apply, _conf_dir(args))
        print(f"fastlab-meta: wrote {path}; train with it: fastlab-train schedule={args.apply}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(run_cli("fastlab-meta", lambda: run(args)))


if __name__ == "__main__":
    main()
