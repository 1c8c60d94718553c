"""The meta-analysis of a sweep: a random forest over the trials, what matters, and where the best
value of the focus parameter lies.

:class:`MetaAnalysis` follows scikit-learn's conventions: the constructor stores its arguments
unchanged, :meth:`MetaAnalysis.fit` does the work and returns ``self``, learned state ends in
``_``, and every random step is seeded from ``random_state``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import yaml
from sklearn.base import BaseEstimator

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.anova import second_opinions
from fastlab.analysis.forest.dependence import (
    Progress,
    bootstrap_curves,
    conditional_optimum,
    grid_for,
    pd_curve,
    pd_surface,
    plateau_argmax,
)
from fastlab.analysis.forest.derive import with_derived, without_collinear
from fastlab.analysis.forest.encode import encode, label
from fastlab.analysis.forest.importance import heldout_importance
from fastlab.analysis.forest.mechanism import (
    LOWEST_RATE,
    LOWEST_RATE_EXPR,
    compare_bases,
    ratio_surfaces,
)
from fastlab.analysis.forest.recommend import (
    MIN_IMPORTANCE,
    NEUTRAL,
    recommend,
    round3,
    tuned_comparison,
)
from fastlab.analysis.forest.trees import fit_quietly, make_forest, oob_r2
from fastlab.analysis.forest.verdict import (
    DEFAULT_MARGIN_SHARE,
    mechanism_verdict,
    trust,
    trust_warning,
)
from fastlab.analysis.sources.direction import check_direction
from fastlab.analysis.sources.objectives import front_rows
from fastlab.analysis.sources.table import (
    EPOCHS_RUN,
    INFEASIBLE_POLICIES,
    PRUNED,
    PRUNED_POLICIES,
    TrialsTable,
    drop_infeasible,
    keep_pruned,
)

DEFAULT_FOCUS = "schedule.lr_ratio"
MIN_TRIALS = 5  # a forest with out-of-bag estimates needs a handful of trials at the very least
FEW_TRIALS = 30  # below this, say that everything is a sketch
GRID_2D = 30  # points of the other parameter in the 2-D partial dependence
HEAD_RATE = "schedule.lr_max"  # the head's peak rate: group g of n trains at lr_max / ratio^(n-1-g)
GROUPS_FACT = "layer_groups"  # metrics.json's count of the model's layer groups


class MetaAnalysis(BaseEstimator):
    """Random-forest meta-analysis of a trials table.

    A scikit-learn estimator in form (``get_params``, ``clone`` and ``repr`` work), though
    ``fit`` takes a :class:`TrialsTable` rather than ``(X, y)``: the table carries what ``X``
    cannot, such as scales, statuses and the objective's direction.

    Parameters
    ----------
    focus : the parameter to recommend a value for; None: ``schedule.lr_ratio`` when it was swept,
        else the most important numeric parameter.
    level : coverage of the intervals (0 < level < 1).
    neutral : the focus value that does nothing, to measure the gain against; ``"auto"``: 1 for
        ``schedule.lr_ratio``, else none.
    reference : a value to test against the interval (e.g. 2.6, ULMFiT's ratio), or None.
    direction : ``maximize`` or ``minimize``; None: what the sweep recorded.
    diverged : ``worst`` (score diverged trials as the worst completed value) or ``drop``.
    pruned : ``drop`` (pruned trials say nothing about a full training: left out) or ``keep``
        (scored by the value they were stopped at, with ``epochs_run`` as a feature;
        :func:`fastlab.analysis.sources.table.keep_pruned`).
    n_estimators : trees of the main forest (OOB R^2, partial dependence, the 2-D surface).
    min_samples_leaf : of every forest.
    n_boot : bootstrap refits for the bands and intervals.
    n_boot_estimators : trees of each bootstrap and importance forest; fewer than the main
        forest's, since a forest's cost is mostly per tree and the resampling dominates the
        spread anyway.
    grid_size : points of each 1-D partial dependence grid.
    n_splits, n_repeats : folds and shuffles of the held-out permutation importance.
    random_state : seeds every forest, fold split and resample.
    n_jobs : forests' parallel jobs (None: 1).
    progress : called as ``progress(done, total)`` during the bootstrap, or None.
    derive : ``NAME=EXPR`` strings (``--derive``, :mod:`fastlab.analysis.forest.derive`): columns computed
        from others, analysed like any parameter (and a possible ``focus``), each in place of the
        last swept parameter it reads that is not the focus
        (:func:`~fastlab.analysis.forest.derive.without_collinear`).
    infeasible : ``keep`` (trials that broke a sweep's constraint are still measured: analysed like
        any other) or ``drop`` (left out, counted; :func:`fastlab.analysis.sources.table.drop_infeasible`).
    margin : the smallest gain of the objective that counts (``--margin``; objective units, >= 0):
        a clear optimum's gain must exceed it (and its interval lie above 0), and a value is
        non-inferior when the interval of what it loses lies below it. None: the seed noise of a sweep with repeats (their pooled sd),
        else :data:`~fastlab.analysis.forest.verdict.DEFAULT_MARGIN_SHARE` of the trials' median
        |objective| (:meth:`set_margin` replaces it once a confirmation grid has measured the
        noise).
    anova : also rate the parameters by fANOVA (main and pair terms) and PED-ANOVA (the top 10%),
        Optuna's evaluators over the same trials (:mod:`fastlab.analysis.forest.anova`; the
        ``optuna`` extra); False leaves them out (the stability refits do).
    mechanism : with the focus on ``schedule.lr_ratio``, ``schedule.lr_max`` swept and the trials'
        ``layer_groups`` recorded, test whether the ratio or only the lowest group's rate carries
        the effect (:mod:`fastlab.analysis.forest.mechanism`); when it is the lowest rate, the
        ratio's verdict, non-inferiority and tunability are read in the basis (head rate, lowest
        rate) (``judged_in_``). False leaves it out; ``"lowest_rate"`` reads the ratio in that
        basis without the comparison (the stability refits of an analysis that found it).
    """

    def __init__(self, focus: str | None = None, level: float = 0.9, neutral: Any = "auto",
                 reference: float | None = None, direction: str | None = None,
                 diverged: str = "worst", pruned: str = "drop", n_estimators: int = 300, min_samples_leaf: int = 3,
                 n_boot: int = 100, n_boot_estimators: int = 100, grid_size: int = 50, n_splits: int = 5, n_repeats: int = 5,
                 random_state: int = 0, n_jobs: int | None = None,
                 progress: Progress | None = None, derive: tuple[str, ...] = (),
                 infeasible: str = "keep", margin: float | None = None,
                 anova: bool = True, mechanism: bool | str = True) -> None:
        self.focus = focus
        self.level = level
        self.neutral = neutral
        self.reference = reference
        self.direction = direction
        self.diverged = diverged
        self.pruned = pruned
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.n_boot = n_boot
        self.n_boot_estimators = n_boot_estimators
        self.grid_size = grid_size
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.progress = progress
        self.derive = derive
        self.infeasible = infeasible
        self.margin = margin
        self.anova = anova
        self.mechanism = mechanism

    # ------------------------------------------------------------------------------------ fit

    def _forest(self, seed: int, main: bool = False):
        # min_samples_leaf shrinks with the trials so that a tiny sweep still gets some splits.
        leaf = max(1, min(self.min_samples_leaf, len(self.encoded_.y) // 5))
        trees = self.n_estimators if main else min(self.n_boot_estimators, self.n_estimators)
        return make_forest(trees, leaf, seed, self.n_jobs)

    def _check_params(self) -> None:
        if not 0 < self.level < 1:
            raise MetaError(f"--level {self.level} must lie strictly between 0 and 1, e.g. 0.9")
        if self.n_boot < 2:
            raise MetaError(f"--n-boot {self.n_boot} is too few for an interval: use e.g. 100")
        if self.margin is not None:
            _check_margin(self.margin)

    def fit(self, table: TrialsTable) -> MetaAnalysis:
        """Analyse ``table``; returns ``self``. Raises ``MetaError`` (one line) on unusable input."""
        self._check_params()
        if self.pruned not in PRUNED_POLICIES:
            raise MetaError(f"--pruned {self.pruned!r} is not known: use drop or keep")
        n_pruned = table.counts().get(PRUNED, 0)
        if self.pruned == "keep":
            table, n_pruned = keep_pruned(table)
        self.pruned_policy_ = pruned_policy(self.pruned, n_pruned)
        if self.infeasible not in INFEASIBLE_POLICIES:
            raise MetaError(f"--infeasible {self.infeasible!r} is not known: use keep or drop")
        n_infeasible = int(table.infeasible().sum())
        if self.infeasible == "drop":
            table, n_infeasible = drop_infeasible(table)
        self.infeasible_policy_ = infeasible_policy(self.infeasible, n_infeasible, table.objective)
        swept = table
        self.table_, self.replaced_ = without_collinear(
            with_derived(table, self.derive),
            self.focus or (DEFAULT_FOCUS if DEFAULT_FOCUS in table.names else None))
        table = self.table_
        self.direction_ = check_direction(self.direction or table.direction, table.objective,
                                          str(table.path), table.direction_note)
        self.sign_ = 1.0 if self.direction_ == "maximize" else -1.0
        self.encoded_ = enc = encode(table, self.direction_, self.diverged)
        self.n_trials_ = n = len(enc.y)
        if n < MIN_TRIALS:
            raise MetaError(f"{table.path} has only {n} usable trial(s) ({enc.policy['text']}): "
                            f"the forest needs at least {MIN_TRIALS}; run more trials")
        if not enc.features:
            raise MetaError(f"no parameter varies between the trials of {table.path} "
                            f"(swept: {list(table.names) or 'none'}): sweep at least one "
                            "hyperparameter")
        X, y = enc.X, enc.y
        self.focus_ = self._resolve_focus()

        self.forest_ = fit_quietly(self._forest(self.random_state, main=True), X, y)
        self.oob_prediction_ = np.asarray(self.forest_.oob_prediction_, dtype=float)
        self.oob_r2_ = oob_r2(self.forest_, y)
        # conditional parameters: importance and dependence over the trials that have them
        active = {enc.index(name): has for name, has in enc.active.items()}
        mean, std = heldout_importance(self._forest, X, y, self.n_splits, self.n_repeats,
                                       self.random_state, active)
        self.importance_ = dict(zip(enc.names, (float(v) for v in mean)))
        self.importance_std_ = dict(zip(enc.names, (float(v) for v in std)))
        if self.focus_ is None:  # the default focus was not swept: take the most important
            # hyperparameter; epochs_run (--pruned keep) says how long a trial ran, not what to set
            numeric = [f.name for f in enc.features if f.numeric and f.name != EPOCHS_RUN] or \
                [f.name for f in enc.features if f.numeric]
            self.focus_ = max(numeric, key=self.importance_.get) if numeric else None
        self.neutral_ = (NEUTRAL.get(self.focus_) if self.neutral == "auto" else self.neutral)
        # a second opinion on what matters, over the same trials: (None, the extra to install)
        # without optuna; (None, "") when not asked for
        self.importance_methods_, self.importance_methods_note_ = (
            second_opinions(enc, self.direction_, self.importance_, self.random_state, self.focus_)
            if self.anova else (None, ""))

        self.margin_, self.margin_source_ = self._resolve_margin()

        grids = {}
        for j, f in enumerate(enc.features):
            extra = (self.neutral_, self.reference) if f.name == self.focus_ else ()
            grids[j] = grid_for(f, X[enc.active_rows(f.name), j], self.grid_size, extra)
        self.focus_grid_ = None if self.focus_ is None else grids[enc.index(self.focus_)]
        self.pd2d_ = self._fit_2d()
        rows = self._slice_rows()
        held: list = []  # the refit in progress
        boot_slices: list[np.ndarray] = []  # (R, K) per refit: the 2-D slices, read as they come

        def read_held() -> None:
            if held and rows is not None and self.pd2d_ is not None:
                boot_slices.append(self._slice(held[-1], rows))
            held.clear()

        def refit(seed: int):
            # bootstrap_curves fits each forest it asks for before it asks for the next: read the
            # previous refit's slices now, so that one refit at a time is held, not n_boot
            read_held()
            held.append(self._forest(seed))
            return held[-1]

        boot = bootstrap_curves(refit, X, y, grids, self.n_boot, self.random_state + 1,
                                self.progress, active)
        read_held()
        self.pd_ = {}
        for j, f in enumerate(enc.features):
            curve = pd_curve(self.forest_, X[enc.active_rows(f.name)], j, grids[j])
            lo, hi = np.nanquantile(boot[j], [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
            self.pd_[f.name] = {"x": grids[j], "values": f.from_x(grids[j]), "mean": curve,
                                "lo": lo, "hi": hi, "boot": boot[j]}
        self.slices_ = self._slices(rows, boot_slices)
        self.mechanism_, self.judged_in_ = self._mechanism(swept)
        self._judge_focus()
        self.warnings_ = self._warnings()
        return self

    def _mechanism(self, swept: TrialsTable) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The mechanism (:mod:`fastlab.analysis.forest.mechanism`) and, when the lowest rate
        carries the effect (and no --derive chose the basis already), the ratio read in the
        lowest-rate basis (:meth:`_in_lowest_basis`); (None, None) where it does not apply.
        ``mechanism="lowest_rate"`` skips the comparison and reads the ratio there (the
        stability refits of an analysis that found it)."""
        groups = sorted({int(m[GROUPS_FACT]) for m in swept.metrics
                         if isinstance(m, dict) and m.get(GROUPS_FACT)})
        if not (self.mechanism and self.focus_ == DEFAULT_FOCUS and HEAD_RATE in swept.names
                and groups and max(groups) > 1):
            return None, None
        spec = f"{LOWEST_RATE}={LOWEST_RATE_EXPR}"
        try:
            lowest, _ = without_collinear(with_derived(swept, (spec,)), LOWEST_RATE)
        except MetaError:  # a column named lowest_rate already, or no trial with its groups
            return None, None
        # the sweep's own basis: what the forest was fitted on, unless --derive changed it
        a = self.encoded_ if not self.derive else encode(swept, self.direction_, self.diverged)
        b = encode(lowest, self.direction_, self.diverged)
        if a.X.shape[0] != b.X.shape[0] or not np.array_equal(a.y, b.y) \
                or not a.features[a.index(HEAD_RATE)].numeric:
            return None, None  # some trial without layer_groups: the bases differ in trials
        if self.mechanism == LOWEST_RATE:
            return None, self._in_lowest_basis(b, groups)
        comparison = compare_bases(self._forest, a.X, b.X, a.y, self.level, self.n_splits,
                                   random_state=self.random_state)
        ratio_matters = self.matters(DEFAULT_FOCUS) if DEFAULT_FOCUS in self.importance_ else False
        out = mechanism_verdict(comparison, ratio_matters, groups)
        if out["basis"] != LOWEST_RATE or self.derive:
            return out, None
        judged = self._in_lowest_basis(b, groups)
        out["lowest_rate"], out["judged_in"] = judged["lowest_rate"], judged["text"]
        return out, judged

    def _in_lowest_basis(self, b, groups: list[int]) -> dict[str, Any]:
        """The ratio read from forests of the basis (head rate, lowest rate, ...) ``b``: at each
        (ratio, head rate) of the grids, that basis's 2-D partial dependence at the lowest rate
        they give (:func:`~fastlab.analysis.forest.mechanism.ratio_surfaces`), for the full
        forest and ``n_boot`` refits. ``{surface (G, K), boot (B, G, K), tuned (K,), groups,
        lowest_rate {best, interval, head_rate}, text}``."""
        enc = self.encoded_
        f_ratio = enc.features[enc.index(DEFAULT_FOCUS)]
        j_head, j_low = b.index(HEAD_RATE), b.index(LOWEST_RATE)
        f_head, f_low = b.features[j_head], b.features[j_low]
        counts = [sum(1 for m in self.table_.metrics if m.get(GROUPS_FACT) == g) for g in groups]
        g = groups[int(np.argmax(counts))]  # several depths: read the ratio at the commonest

        def to_low(ratio_x, head_x):
            head, ratio = f_head.from_x(head_x.ravel()), f_ratio.from_x(ratio_x.ravel())
            low = head[None, :] / ratio[:, None] ** (g - 1)  # (G, K)
            return f_low.to_x(low.ravel()).reshape(low.shape)

        ratio_grid = self.focus_grid_
        head_grid = grid_for(f_head, b.X[:, j_head], GRID_2D)
        low_grid = grid_for(f_low, b.X[:, j_low], 2 * GRID_2D)
        rng = np.random.default_rng(self.random_state + 2)
        n = len(b.y)

        def forests():
            yield fit_quietly(self._forest(self.random_state, main=True), b.X, b.y), b.X
            for _ in range(self.n_boot):
                idx = rng.integers(0, n, n)
                yield fit_quietly(self._forest(int(rng.integers(2**31))), b.X[idx], b.y[idx]), b.X[idx]

        full, *boot = ratio_surfaces(forests(), j_head, j_low, ratio_grid, head_grid, to_low,
                                     low_grid)
        tuned = f_head.from_x(head_grid)

        def best_low(p: np.ndarray) -> float:
            i, k = np.unravel_index(int(np.argmax(self.sign_ * p)), p.shape)
            return float(tuned[k] / f_ratio.from_x(ratio_grid[i:i + 1])[0] ** (g - 1))

        lows = np.asarray([best_low(p) for p in boot])
        i, k = np.unravel_index(int(np.argmax(self.sign_ * full)), full.shape)
        lo, hi = np.quantile(lows, [(1 - self.level) / 2, (1 + self.level) / 2])
        low = {"best": best_low(full), "interval": [float(lo), float(hi)], "level": self.level,
               "head_rate": float(tuned[k]), "groups": g}
        text = (f"(head rate, lowest group's rate, ...) with {g} layer groups: each ratio is read "
                "with the head rate tuned for it, the lowest rate following from the two")
        return {"surface": full, "boot": np.stack(boot), "tuned": [float(v) for v in tuned],
                "groups": g, "lowest_rate": low, "text": text}

    def _resolve_margin(self) -> tuple[float, str]:
        """``--margin``, else the seed noise of the sweep's repeats, else the stated default."""
        if self.margin is not None:
            return float(self.margin), "set by --margin"
        r = self.table_.replicates or {}
        if r.get("sd") is not None and r["sd"] > 0:
            return float(r["sd"]), (f"the seed noise of the sweep's repeats: the pooled sd of a "
                                    f"single run over {r['repeats']} seeds per configuration")
        y = self.encoded_.y
        obj = self.table_.objective or "objective"
        return (float(DEFAULT_MARGIN_SHARE * np.median(np.abs(y))),
                f"default: {DEFAULT_MARGIN_SHARE:.1%} of the trials' median absolute {obj}, since the "
                "seed noise was not measured; hydra.sweeper.repeats, --confirm or --margin "
                "measure or set it")

    def set_margin(self, margin: float, source: str) -> MetaAnalysis:
        """Judge the fitted analysis again with another margin (e.g. the seed noise a
        confirmation grid measured): the verdict, non-inferiority and tunability; no refit."""
        _check_margin(margin)
        self.margin_, self.margin_source_ = float(margin), source
        self._judge_focus()
        return self

    def _judge_focus(self) -> None:
        """Every answer about the focus that the margin decides: ``recommendation_``,
        ``noninferior_`` and ``tunability_`` (None without a focus or anything to compare)."""
        self.recommendation_ = self.noninferior_ = self.tunability_ = None
        if self.focus_ is None:
            return
        jd = self.judged_in_
        if jd is not None:  # the lowest rate carries the effect: the ratio read in its basis
            self._judge_in_lowest_basis(jd)
            return
        enc = self.encoded_
        f = enc.features[enc.index(self.focus_)]
        p = self.pd_[self.focus_]
        self.recommendation_ = recommend(
            f, p["x"], p["mean"], p["boot"], self.sign_, self.level, self.neutral_,
            self.reference, (self.importance_[f.name], self.importance_std_[f.name]),
            self.table_.objective or "objective", self.margin_)
        self.recommendation_["margin_source"] = self.margin_source_
        sl = self.slices_
        if sl is not None:
            self.noninferior_, self.tunability_ = tuned_comparison(
                sl["values"], sl["tuned"], sl["surface"], sl["boot"], self.sign_, self.level,
                self.margin_)
            self.noninferior_["tuned"] = self.tunability_["tuned"] = sl["param"]

    def _judge_in_lowest_basis(self, jd: dict[str, Any]) -> None:
        """The ratio's verdict, non-inferiority and tunability from the lowest-rate basis: its
        curve is the best over head rates at each ratio (a ratio sets the lowest rate only
        together with a head rate), the comparisons are read at the tuned head rate."""
        enc = self.encoded_
        f = enc.features[enc.index(self.focus_)]
        score_full, score_boot = self.sign_ * jd["surface"], self.sign_ * jd["boot"]
        at = [plateau_argmax(row) for row in score_full]  # the tuned head rate of each ratio
        curve = jd["surface"][np.arange(len(at)), at]  # (G,)
        boot = np.take_along_axis(jd["boot"], np.argmax(score_boot, axis=2)[:, :, None],
                                  axis=2)[:, :, 0]  # (B, G)
        grid = self.focus_grid_
        rec = recommend(f, grid, curve, boot, self.sign_, self.level, self.neutral_,
                        self.reference, (self.importance_[f.name], self.importance_std_[f.name]),
                        self.table_.objective or "objective", self.margin_)
        self.recommendation_ = {**rec, "margin_source": self.margin_source_,
                                "judged_in": jd["text"],
                                "verdict": "in the lowest-rate basis, head rate tuned per ratio, "
                                + rec["verdict"]}
        rows = self._slice_rows()
        if rows is None:
            return
        rows = [plateau_argmax(self.sign_ * curve), *rows[1:]]
        self.noninferior_, self.tunability_ = tuned_comparison(
            [float(v) for v in f.from_x(grid[rows])], jd["tuned"], jd["surface"][rows],
            jd["boot"][:, rows], self.sign_, self.level, self.margin_)
        self.noninferior_["tuned"] = self.tunability_["tuned"] = HEAD_RATE

    def _slice_rows(self) -> list[int] | None:
        """Rows of the focus's grid where non-inferiority and tunability are read: the best focus
        value where the 2-D surface is best (without one: the best of the focus's own curve, read
        once it exists: row -1), then the neutral value and the reference, those on the grid;
        None without a focus or anything to compare."""
        if self.focus_ is None:
            return None
        enc = self.encoded_
        f, x = enc.features[enc.index(self.focus_)], self.focus_grid_
        others = list(dict.fromkeys(
            int(np.argmin(np.abs(x - f.to_x([v])[0]))) for v in (self.neutral_, self.reference)
            if v is not None and not (f.log and v <= 0)
            and np.isclose(x, f.to_x([v])[0], rtol=0, atol=1e-12).any()))
        if not others:
            return None
        q = self.pd2d_
        best = -1 if q is None else int(q["best_i"][int(np.argmax(self.sign_ * q["best_value"]))])
        return [best, *others]

    def _slice(self, forest, rows: list[int]) -> np.ndarray:
        """One forest's 2-D partial dependence at the focus's ``rows`` x the other's grid (R, K)."""
        q, enc = self.pd2d_, self.encoded_
        both = enc.active_rows(q["a"]) & enc.active_rows(q["b"])
        return pd_surface(forest, enc.X[both], enc.index(q["a"]), enc.index(q["b"]),
                          q["x_a"][rows], q["x_b"])

    def _slices(self, rows: list[int] | None, boot: list[np.ndarray]) -> dict[str, Any] | None:
        """The points non-inferiority and tunability are read at: ``{param (the tuned other
        parameter, None without a 2-D surface), values (R,), tuned (K,), surface (R, K) of the
        full forest, boot (B, R, K) of the refits}``."""
        if rows is None:
            return None
        enc, p, q = self.encoded_, self.pd_[self.focus_], self.pd2d_
        f = enc.features[enc.index(self.focus_)]
        if q is None:  # nothing else to tune: the focus's own curve, one column
            rows = [plateau_argmax(self.sign_ * p["mean"]), *rows[1:]]
            return {"param": None, "values": [float(v) for v in f.from_x(p["x"][rows])],
                    "tuned": [None], "surface": p["mean"][rows][:, None],
                    "boot": p["boot"][:, rows][:, :, None]}
        fb = enc.features[enc.index(q["b"])]
        return {"param": q["b"], "values": [float(v) for v in f.from_x(q["x_a"][rows])],
                "tuned": _values(fb, q["x_b"]), "surface": q["surface"][rows],
                "boot": np.stack(boot)}

    def _resolve_focus(self) -> str | None:
        enc = self.encoded_
        if self.focus is None:
            ok = DEFAULT_FOCUS in enc.names and enc.features[enc.index(DEFAULT_FOCUS)].numeric
            return DEFAULT_FOCUS if ok else None
        if self.focus not in enc.names:
            why = self.encoded_.skipped.get(self.focus)
            raise MetaError(f"--focus {self.focus} is not a parameter of this sweep"
                            f"{f' ({why})' if why else ''}: use one of {enc.names}")
        if not enc.features[enc.index(self.focus)].numeric:
            numeric = [f.name for f in enc.features if f.numeric]
            raise MetaError(f"--focus {self.focus} is categorical: a recommendation needs a "
                            f"numeric parameter, one of {numeric}")
        return self.focus

    def _fit_2d(self) -> dict[str, Any] | None:
        """Partial dependence of the focus (on its 1-D grid) against the most important other
        parameter, and the focus's best value for each value of the other (the conditional
        optimum)."""
        enc = self.encoded_
        others = [name for name in enc.names if name != self.focus_]
        if self.focus_ is None or not others:
            return None
        other = max(others, key=self.importance_.get)
        j, k = enc.index(self.focus_), enc.index(other)
        fo = enc.features[k]
        both = enc.active_rows(self.focus_) & enc.active_rows(other)  # conditional ones where they were swept
        if not both.any():
            return None
        grid_j = self.focus_grid_
        grid_k = grid_for(fo, enc.X[both, k], GRID_2D)
        surface = pd_surface(self.forest_, enc.X[both], j, k, grid_j, grid_k)  # (Gj, Gk)
        best_j = conditional_optimum(surface, self.sign_)  # (Gk,)
        ff = enc.features[j]
        return {"a": self.focus_, "b": other, "x_a": grid_j, "x_b": grid_k,
                "values_a": ff.from_x(grid_j), "values_b": fo.from_x(grid_k),
                "surface": surface, "best_a": ff.from_x(grid_j[best_j]), "best_i": best_j,
                "best_value": surface[best_j, np.arange(len(grid_k))]}

    def _warnings(self) -> list[str]:
        out = []
        fit = trust_warning(self.oob_r2_)  # every grade below "good" says how far to trust it
        if fit is not None:
            out.append(fit)
        for name, n in self.encoded_.policy.get("not_finite", {}).items():
            out.append(f"--derive {name}={self.table_.derived[name]} is not finite for {n} "
                       "trial(s): they are left out of the analysis")
        for f in self.encoded_.features:
            if f.condition:
                k = int(self.encoded_.active[f.name].sum())
                out.append(f"`{f.name}` is conditional (swept where {f.condition}): its importance and "
                           f"partial dependence are over the {k} of {self.n_trials_} trials that swept it")
        if self.n_trials_ < FEW_TRIALS:
            out.append(f"only {self.n_trials_} trials: read everything below as a sketch; "
                       f"{FEW_TRIALS * 3} or more make a study")
        counts, kept = self.table_.counts(), self.n_trials_
        if counts.get("diverged", 0) > 0.3 * max(kept, 1):
            out.append(f"{counts['diverged']} of {len(self.table_)} trials diverged: the ranges "
                       "reach far into rates that break training")
        return out

    # -------------------------------------------------------------------------------- results

    def conditional_rows(self, k: int = 6) -> list[dict[str, Any]]:
        """Rows of the conditional optimum, ``{b, best_a, predicted}``: every category of a
        categorical other parameter and every sampled value of a discrete one (its grid holds
        nothing else), else about ``k`` rows evenly over its grid."""
        p = self.pd2d_
        if p is None:
            return []
        n = len(p["values_b"])
        fb = self.encoded_.features[self.encoded_.index(p["b"])]
        if fb.numeric and not fb.discrete:
            idx = np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))
        else:
            idx = np.arange(n)
        return [self._conditional_row(int(i)) for i in idx]

    def _conditional_row(self, i: int) -> dict[str, Any]:
        p = self.pd2d_
        fb = self.encoded_.features[self.encoded_.index(p["b"])]
        return {"b": _values(fb, p["x_b"][i:i + 1])[0], "best_a": float(p["best_a"][i]),
                "predicted": float(p["best_value"][i])}

    def conditional_at_best(self) -> dict[str, Any] | None:
        """The conditional optimum where the 2-D surface is best: ``{b, best_a, predicted}``."""
        p = self.pd2d_
        if p is None:
            return None
        return self._conditional_row(int(np.argmax(self.sign_ * p["best_value"])))

    def summary(self) -> dict[str, Any]:
        """Everything ``summary.json`` holds (plain JSON types; NaN as null)."""
        enc = self.encoded_
        order = sorted(enc.names, key=self.importance_.get, reverse=True)
        rec = self.recommendation_
        return _json_safe({
            "source": {"path": str(self.table_.path), "format": self.table_.source},
            "objective": self.table_.objective,
            "direction": self.direction_,
            "n_trials": self.n_trials_,
            "trials": self.table_.counts(),
            "replicates": self.table_.replicates,
            "policy": enc.policy,
            "pruned": self.pruned_policy_,
            "features": {f.name: {"kind": f.kind, "scale": "log10" if f.log else
                                  ("linear" if f.numeric else "codes"), "why": f.why,
                                  **({"range": [f.low, f.high]} if f.numeric else
                                     {"categories": list(f.categories)}),
                                  **({"levels": _values(f, f.levels)} if f.discrete else {}),
                                  **({"derived": self.table_.derived[f.name]}
                                     if f.name in self.table_.derived else {}),
                                  **({"condition": f.condition, "active": int(enc.active[f.name].sum())}
                                     if f.condition else {})}
                         for f in enc.features},
            "skipped": enc.skipped,
            "oob_r2": self.oob_r2_,
            "trust": trust(self.oob_r2_),
            "derived": dict(self.table_.derived),
            "importance": {name: self.importance_[name] for name in order},
            "importance_std": {name: self.importance_std_[name] for name in order},
            "recommendation": rec,
            "importance_methods": self.importance_methods_ if self.importance_methods_ is not None
            else ({"skipped": self.importance_methods_note_} if self.importance_methods_note_ else None),
            "mechanism": self.mechanism_,
            "basis": {"parameters": list(enc.names), "replaced": dict(self.replaced_)},
            "noninferior": self.noninferior_,
            "tunability": self.tunability_,
            **self._spread(),
            "focus_curve": self.focus_curve(),
            "conditional_optimum": None if self.pd2d_ is None else {
                "param": self.pd2d_["a"], "given": self.pd2d_["b"],
                "rows": self.conditional_rows(), "at_best": self.conditional_at_best()},
            "warnings": self.warnings_,
            "settings": {"level": self.level, "n_boot": self.n_boot,
                         "n_estimators": self.n_estimators,
                         "n_boot_estimators": self.n_boot_estimators,
                         "min_samples_leaf": self.min_samples_leaf, "grid_size": self.grid_size,
                         "importance_folds": self.n_splits, "importance_repeats": self.n_repeats,
                         "random_state": self.random_state, "diverged": self.diverged,
                         "pruned": self.pruned, "infeasible": self.infeasible,
                         "margin": self.margin, "anova": self.anova,
                         "mechanism": self.mechanism},
            **self._objectives_summary(),
        })

    def _objectives_summary(self) -> dict[str, Any]:
        """A sweep of several objectives: ``objectives`` {name: direction}, ``infeasible``
        {policy, n, text} and (two or more) ``pareto``, the front's trial numbers best first by
        the first objective; ``{}`` for a sweep of one objective."""
        t = self.table_
        if not t.objectives:
            return {}
        out = {"objectives": dict(t.objectives), "infeasible": self.infeasible_policy_}
        if len(t.objectives) > 1:
            out["pareto"] = [t.numbers[i] for i in front_rows(t)]
        return out

    def _spread(self) -> dict[str, Any]:
        """The ratio as users meet it: ``spread`` = head rate / lowest rate = ratio^(layer_groups
        - 1), and ``lowest_rate`` = the lowest group's rate at the recommended head rate, per
        ``layer_groups`` the trials' metrics.json record (keys as strings); None when the focus
        is not ``schedule.lr_ratio`` or no trial records its layer groups."""
        rec = self.recommendation_
        groups = sorted({int(m[GROUPS_FACT]) for m in self.table_.metrics
                         if isinstance(m, dict) and m.get(GROUPS_FACT)})
        if rec is None or self.focus_ != DEFAULT_FOCUS or not groups:
            return {"spread": None, "lowest_rate": None}
        ratio = float(rec["best"])
        spread = {str(g): ratio ** (g - 1) for g in groups}
        head, where = self._head_rate()
        lowest = None if head is None else {
            "ratio": ratio, "head_rate": head, "head_rate_from": where,
            "values": {g: head / s for g, s in spread.items()}}
        return {"spread": {"ratio": ratio, "values": spread}, "lowest_rate": lowest}

    def _head_rate(self) -> tuple[float | None, str]:
        """The recommended ``schedule.lr_max`` and where it comes from: the conditional optimum
        where the 2-D surface is best, else the best of its own partial dependence, else the
        sweep's fixed value; None when it is none of these."""
        if self.judged_in_ is not None:
            return self.judged_in_["lowest_rate"]["head_rate"], \
                "where the lowest-rate basis is best (the mechanism)"
        q = self.pd2d_
        if q is not None and q["b"] == HEAD_RATE:
            return float(self.conditional_at_best()["b"]), "where the 2-D partial dependence is best"
        if HEAD_RATE in self.pd_:
            p = self.pd_[HEAD_RATE]
            return float(p["values"][int(np.argmax(self.sign_ * p["mean"]))]), \
                "the best of its partial dependence"
        fixed = self.table_.fixed.get(HEAD_RATE)
        if isinstance(fixed, int | float) and not isinstance(fixed, bool):
            return float(fixed), "the sweep's fixed value"
        return None, "not known"

    def focus_curve(self) -> dict[str, Any] | None:
        """The focus's partial dependence as plain lists, ``{param, values, mean, lo, hi}``
        (grid points; the band is the bootstrap's): what a cross-study figure overlays
        without refitting (:mod:`fastlab.analysis.study.matrix`)."""
        if self.focus_ is None:
            return None
        p = self.pd_[self.focus_]
        return {"param": self.focus_, "values": [float(v) for v in p["values"]],
                "mean": p["mean"], "lo": p["lo"], "hi": p["hi"]}

    def matters(self, name: str) -> bool:
        """Whether a parameter's held-out importance is clearly above zero."""
        imp, spread = self.importance_[name], self.importance_std_[name]
        return imp > MIN_IMPORTANCE and imp > spread

    def suggest(self, name: str, current: Any) -> tuple[Any, str]:
        """A value for a parameter other than the focus, when fixing it for the next runs, and why.

        One that matters: the best of its own partial dependence. One that does not: ``current``
        (the sweep's config value) when it lies within what the trials sampled, else the trials'
        median (or most common category), so a fixed value never leaves the explored space.
        """
        enc = self.encoded_
        f = enc.features[enc.index(name)]
        if self.matters(name):
            p = self.pd_[name]
            best = p["values"][int(np.argmax(self.sign_ * p["mean"]))]
            value = round3(float(best), f.integer) if f.numeric else yaml.safe_load(str(best))
            return value, "the best of its partial dependence"
        why = (f"it does not matter: importance {self.importance_[name]:.2g} ± "
               f"{self.importance_std_[name]:.2g}")
        column = enc.X[enc.active_rows(name), enc.index(name)]
        if f.numeric:
            if isinstance(current, int | float) and not isinstance(current, bool) \
                    and f.low <= current <= f.high:
                return current, f"kept; {why}"
            return round3(float(f.from_x([np.median(column)])[0]), f.integer), f"the trials' median; {why}"
        if label(current) in f.categories:
            return current, f"kept; {why}"
        codes, counts = np.unique(column, return_counts=True)
        common = f.categories[int(codes[np.argmax(counts)])]
        return yaml.safe_load(common), f"the trials' most common value; {why}"


def _check_margin(margin: float) -> None:
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
        raise MetaError(f"--margin {margin} must be a finite number >= 0 in the objective's units, "
                        "e.g. 0.005 (or 0 for the bare rule 'gain interval above 0')")


def _values(f, x) -> list[Any]:
    """Column values -> the parameter's own values as plain Python (ints for an integer one)."""
    return [int(v) if f.numeric and f.integer else _plain(v) for v in f.from_x(x)]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def infeasible_policy(policy: str, n: int, objective: str | None) -> dict[str, Any]:
    """What the report says of trials that broke a constraint: ``{"policy", "n", "text"}``."""
    if n == 0:
        text = "no trial broke a constraint"
    elif policy == "keep":
        text = (f"{n} infeasible trial(s) (they broke a constraint) kept: their "
                f"{objective or 'objective'} is measured all the same")
    else:
        text = f"{n} infeasible trial(s) left out (they broke a constraint)"
    return {"policy": policy, "n": n, "text": text}


def pruned_policy(policy: str, n: int) -> dict[str, Any]:
    """What the report says of pruned trials: ``{"policy", "n", "text"}``."""
    if n == 0:
        text = "no trial was pruned"
    elif policy == "keep":
        text = (f"{n} pruned trial(s) kept with the objective they were stopped at; the epochs each "
                "trial trained are the feature `epochs_run`")
    else:
        text = f"{n} pruned trial(s) left out (they did not train to the end)"
    return {"policy": policy, "n": n, "text": text}


def _json_safe(obj: Any) -> Any:
    """Numpy scalars to Python, NaN and infinities to None, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    obj = _plain(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
