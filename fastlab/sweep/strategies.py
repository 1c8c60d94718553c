"""Proposal strategies: which params the next trials get.

Each proposal is a pure function of the space, the settings, the trial numbers to fill and (for
the forest) the finished trials. Trial ``k`` of a grid is grid point ``k``, of a random sweep Sobol
point ``k``, so a resumed grid or random sweep proposes exactly what an uninterrupted one would.
"""

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastlab.sweep.errors import SweepError
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import Discrete, SearchSpace


@dataclass(frozen=True)
class Observation:
    """A finished trial as the forest sees it: its params and its value (None = diverged); with
    several objectives, its ``judged`` objectives (``Trial.objectives``)."""

    params: dict[str, Any]
    value: float | None
    judged: dict[str, Any] | None = None


def grid_size(space: SearchSpace) -> int:
    """The number of grid points; a SweepError if some dimension cannot be enumerated."""
    for d in space.dims:
        if not isinstance(d, Discrete):
            raise SweepError(
                f"strategy=grid cannot enumerate {d.name}={d.form}; use choice(...) or "
                "range(...), or hydra.sweeper.strategy=random"
            )
    if space.conditions:
        return len(_conditional_grid(space))
    return math.prod(len(d.values) for d in space.dims)


def grid_params(space: SearchSpace, numbers: Sequence[int]) -> list[dict[str, Any]]:
    """Grid points ``numbers`` in itertools.product order (the last key varies fastest); with
    conditions, only the valid combinations, each once (a conditional key that is absent does
    not multiply the points)."""
    grid_size(space)
    if space.conditions:
        points = _conditional_grid(space)
        return [dict(points[k]) for k in numbers]
    points = list(itertools.product(*(d.values for d in space.dims)))
    return [dict(zip(space.names, points[k], strict=True)) for k in numbers]


_GRIDS: dict[str, tuple] = {}  # fingerprint -> the conditional grid (values may be lists: no lru_cache)


def _conditional_grid(space: SearchSpace) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """The distinct valid combinations in product order, as (name, value) pairs: the driver asks
    at every claim, so they are enumerated once per space."""
    found = _GRIDS.get(fingerprint := space.fingerprint())
    if found is not None:
        return found
    seen, points = set(), []
    for values in itertools.product(*(d.values for d in space.dims)):
        params = space.active(dict(zip(space.names, values, strict=True)))
        key = space.key_of(params)
        if key not in seen:
            seen.add(key)
            points.append(tuple(params.items()))
    _GRIDS[fingerprint] = tuple(points)
    return _GRIDS[fingerprint]


def sobol_units(n_dims: int, count: int, seed: int) -> np.ndarray:
    """The first ``count`` points of a scrambled Sobol sequence, shape (count, n_dims).

    Drawn in a power-of-two block (Sobol's balance holds for those) and cut: point ``k`` depends
    only on ``seed`` and ``k``, never on how many points were asked for.
    """
    if n_dims == 0:
        return np.zeros((count, 0))
    return _sobol_block(n_dims, max(0, math.ceil(math.log2(max(count, 1)))), seed)[:count]


@functools.lru_cache(maxsize=8)
def _sobol_block(n_dims: int, m: int, seed: int) -> np.ndarray:
    """The first 2**m points, read-only: the driver asks for them at every claim."""
    # Imported on first use: scipy.stats costs seconds of every driver's start, and a grid needs none.
    from scipy.stats import qmc

    sampler = qmc.Sobol(d=n_dims, scramble=True, rng=np.random.default_rng(seed))
    block = sampler.random_base2(m)
    block.flags.writeable = False
    return block


def random_params(space: SearchSpace, numbers: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Sobol points ``numbers`` of the seeded sequence, mapped into the space."""
    if not numbers:
        return []
    units = sobol_units(len(space.dims), max(numbers) + 1, seed)
    return [space.from_unit(units[k]) for k in numbers]


def propose(
    space: SearchSpace,
    settings: SweepSettings,
    seed: int,
    numbers: Sequence[int],
    finished: Sequence[Observation],
    pending: Sequence[dict[str, Any]] = (),
    enqueued: Sequence[dict[str, Any]] = (),
    n_warm: int = 0,
) -> list[dict[str, Any]]:
    """Params for new trials ``numbers`` under ``settings.strategy``.

    ``finished`` are the trials with a result (and, for the forest, the warm start's observations,
    ``n_warm`` of them, which count towards its ``n_initial``); ``pending`` the ones still running,
    which forest proposals must not repeat. Trial ``k`` below ``len(enqueued)`` is ``enqueued[k]``
    (:func:`fastlab.sweep.prior.enqueued`).
    """
    if settings.strategy == "grid":
        return grid_params(space, numbers)
    chosen = {k: dict(enqueued[k]) for k in numbers if k < len(enqueued)}
    rest = [k for k in numbers if k not in chosen]
    if settings.strategy == "random" or not space.dims:
        chosen.update(zip(rest, random_params(space, rest, seed), strict=True))
        return [chosen[k] for k in numbers]

    # forest: random first, then the surrogate, with some random proposals interleaved.
    by_model = [k for k in rest if _use_model(k, settings, seed, len(finished), n_warm)]
    chosen.update(zip(rest, random_params(space, rest, seed), strict=True))
    if by_model:
        # Imported here: scikit-learn is needed only once the surrogate takes over.
        from fastlab.sweep.surrogate import forest_proposals

        taken = [o.params for o in finished] + list(pending)
        taken += [chosen[k] for k in numbers if k not in by_model]
        observed, sign = _scalarised(finished, settings, seed, by_model[0])
        proposals = forest_proposals(
            space,
            observed,
            count=len(by_model),
            sign=sign,
            taken=taken,
            seed=seed * 1_000_003 + by_model[0],
        )
        # Fewer proposals than asked only when the space is exhausted: keep the random ones.
        chosen.update(zip(by_model, proposals, strict=False))
    return [chosen[k] for k in numbers]


def _scalarised(finished: Sequence[Observation], settings: SweepSettings, seed: int,
                first: int) -> tuple[Sequence[Observation], float]:
    """What the forest fits, and the sign it maximizes: the trials' values, or with several
    objectives ParEGO's random scalarisation of them for the batch starting at trial ``first``
    (:mod:`fastlab.sweep.objectives`; infeasible and diverged trials count as the worst)."""
    from fastlab.sweep.objectives import feasible_values, parse_objectives, scalarise, weights_for

    objectives = parse_objectives(settings.objectives, settings.constraints)
    if objectives is None or len(objectives.names) < 2:
        return finished, settings.sign
    rows = [feasible_values(objectives, o.judged) for o in finished]
    weights = weights_for(len(objectives.names), seed, first)
    values = scalarise(rows, objectives.signs, weights)
    return [Observation(o.params, v) for o, v in zip(finished, values, strict=True)], 1.0


def _use_model(number: int, settings: SweepSettings, seed: int, n_finished: int, n_warm: int = 0) -> bool:
    """Whether forest trial ``number`` comes from the surrogate (else from the Sobol sequence);
    a warm start's trials count towards the ``n_initial`` random ones."""
    if number + n_warm < settings.n_initial or n_finished < 2:
        return False
    # Decided per trial number from the seed, so a resume makes the same choice.
    draw = np.random.default_rng([seed, number]).random()
    return bool(draw >= settings.random_fraction)
