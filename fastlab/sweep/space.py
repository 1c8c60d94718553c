"""The search space, read from Hydra's override grammar.

Sources, in order of precedence (a later one replaces an earlier one for the same key):
``hydra.sweeper.params`` from the config, then the command line. Forms understood:

==================================  ====================================================
``key=choice(a, b, c)``, ``a,b,c``    a categorical dimension (values kept as typed)
``key=glob(*)``                       the options of a config group, as a choice
``key=range(start, stop[, step])``    an ordered discrete dimension
``key=interval(a, b)``                a continuous dimension, uniform on [a, b]
``key=int(interval(a, b))``           integers a..b
``key=tag(log, interval(a, b))``      uniform in log(value); ``int(...)`` works inside too
``key=value``                         fixed: passed to every trial unchanged
==================================  ====================================================

Every dimension maps a unit coordinate ``u`` in [0, 1) to a value (``from_unit``) and back
(``to_unit``), so the strategies work on the unit cube whatever the forms.

``hydra.sweeper.conditions`` (:mod:`fastlab.sweep.conditions`) makes a key conditional: a trial's
params leave it out where its condition does not hold, so the trial keeps the config's value.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    Transformer,
    ValueType,
)
from hydra.errors import HydraException

from fastlab.sweep.conditions import Condition, active, parse_conditions
from fastlab.sweep.errors import SweepError
from fastlab.sweep.hydra_private import element_text

# Floats proposed from intervals are rounded to this many significant digits: overrides and
# trials.csv stay readable, and no hyperparameter needs more.
SIGNIFICANT_DIGITS = 6
# A conditional key absent from a trial: its unit coordinate (outside the cube, so the forest's
# trees tell it from every value) and its text in a trial's identity.
ABSENT_UNIT = -1.0
ABSENT_TEXT = "<absent>"


@dataclass(frozen=True)
class Discrete:
    """A finite dimension: ``choice``/``glob`` (categorical) or ``range`` (ordered).

    ``values`` are the typed values (for trials.db and the forest); ``texts`` the same values as
    override text, quoted as the user typed them, so trials see exactly what was asked for.
    """

    name: str
    key: str
    form: str  # "choice", "glob" or "range": for messages and the resume fingerprint
    values: tuple
    texts: tuple

    def from_unit(self, u: float) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def to_unit(self, value: Any) -> float:
        # The middle of the value's cell, so from_unit(to_unit(v)) == v.
        return (self.index(value) + 0.5) / len(self.values)

    def index(self, value: Any) -> int:
        # Compare types too: 1, 1.0 and True are equal in Python but distinct choices.
        for i, candidate in enumerate(self.values):
            if type(candidate) is type(value) and candidate == value:
                return i
        raise SweepError(
            f"value {value!r} of {self.name} is not among its {self.form}: {list(self.texts)}; "
            "the search space changed: use a new hydra.sweep.dir"
        )

    def text(self, value: Any) -> str:
        return self.texts[self.index(value)]

    def describe(self) -> dict:
        return {"name": self.name, "form": self.form, "values": list(self.texts)}


@dataclass(frozen=True)
class Interval:
    """A continuous (or integer) dimension on [low, high], uniform in the value or its log."""

    name: str
    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def _edges(self) -> tuple[float, float]:
        # Integers own the cell [k, k + 1), so the top value is as likely as the others.
        high = self.high + 1 if self.integer else self.high
        if self.log:
            return math.log(self.low), math.log(high)
        return float(self.low), float(high)

    def from_unit(self, u: float) -> int | float:
        lo, hi = self._edges()
        x = lo + u * (hi - lo)
        if self.log:
            x = math.exp(x)
        if self.integer:
            return int(min(max(math.floor(x), self.low), self.high))
        x = float(f"{x:.{SIGNIFICANT_DIGITS}g}")
        return min(max(x, self.low), self.high)

    def to_unit(self, value: float) -> float:
        lo, hi = self._edges()
        x = value + 0.5 if self.integer else value
        x = math.log(x) if self.log else x
        return min(max((x - lo) / (hi - lo), 0.0), 1.0)

    def text(self, value: float) -> str:
        return str(int(value)) if self.integer else repr(float(value))

    @property
    def form(self) -> str:
        inner = f"interval({self.low}, {self.high})"
        inner = f"int({inner})" if self.integer else inner
        return f"tag(log, {inner})" if self.log else inner

    def describe(self) -> dict:
        return {"name": self.name, "form": self.form}


Dimension = Discrete | Interval


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions to search, the fixed overrides every trial gets, and the conditions under
    which a dimension is swept (in :func:`~fastlab.sweep.conditions.parse_conditions`' order)."""

    dims: tuple[Dimension, ...]
    fixed: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    # Where each fixed override (("fixed", its index)) and searched key (("dim", its name)) stood on
    # the command line, so a trial's overrides read in the user's order, as Hydra's basic sweeper
    # keeps them; what it does not place follows, the fixed ones first.
    order: tuple[tuple[str, Any], ...] = ()

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    @property
    def conditional(self) -> dict[str, str]:
        """Conditional key -> the expression under which it is swept."""
        return {c.key: c.text for c in self.conditions}

    def active(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` less the keys whose condition does not hold."""
        return active(params, self.conditions) if self.conditions else dict(params)

    def from_unit(self, u: Sequence[float]) -> dict[str, Any]:
        """One point of the unit cube, shape (d,), -> {name: value}, conditional keys left out
        where their condition does not hold."""
        return self.active({d.name: d.from_unit(max(0.0, float(x))) for d, x in zip(self.dims, u, strict=True)})

    def to_unit(self, params: Mapping[str, Any]) -> list[float]:
        """{name: value} -> a point of the unit cube, shape (d,); an absent key's coordinate is
        ``ABSENT_UNIT``."""
        return [d.to_unit(params[d.name]) if d.name in params else ABSENT_UNIT for d in self.dims]

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The override strings that make one trial, fixed and searched in the command line's order
        (an absent conditional key is not overridden: the trial keeps its config value)."""
        placed = {"fixed": dict(enumerate(self.fixed)),
                  "dim": {d.name: f"{d.key}={d.text(params[d.name])}" for d in self.dims if d.name in params}}
        out = [placed[kind].pop(ref) for kind, ref in self.order if ref in placed[kind]]
        return [*out, *placed["fixed"].values(), *placed["dim"].values()]

    def key_of(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """A hashable identity of a trial's params (its override texts)."""
        return tuple(d.text(params[d.name]) if d.name in params else ABSENT_TEXT for d in self.dims)

    def fingerprint(self) -> str:
        """What must not change between a sweep and its resume: the dims, fixed overrides and conditions."""
        what: dict[str, Any] = {"dims": [d.describe() for d in self.dims], "fixed": sorted(self.fixed)}
        if self.conditions:  # (absent before conditions existed: earlier sweeps resume as they were)
            what["conditions"] = self.conditional
        return json.dumps(what, sort_keys=True)


def parse_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    config_loader: Any = None,
    conditions: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """Build the search space from ``hydra.sweeper.params`` and the command-line overrides.

    Parameters
    ----------
    params : mapping of key -> override value text (``"tag(log, interval(1e-4, 1e-1))"``), or None.
    arguments : the task overrides from the command line, as Hydra passes them to a sweeper.
    config_loader : Hydra's config loader, needed only to expand ``glob(...)`` over a group.
    conditions : ``hydra.sweeper.conditions``, swept key -> expression over other swept keys.
    """
    sources: list[tuple[str, str]] = []
    for key, value in flatten(params or {}).items():
        sources.append((f"hydra.sweeper.params.{key}", f"{key}={_value_text(value)}"))
    sources.extend((f"the command-line override {arg!r}", arg) for arg in arguments)

    parser = OverridesParser.create()
    by_name: dict[str, tuple[str, Override]] = {}
    for where, line in sources:
        try:
            override = parser.parse_override(line)
        except HydraException as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"{where}: cannot parse {line!r} ({detail}); fix its syntax") from e
        name = _plain_key(override)
        # Dict order: a key keeps the place it first had; the command line wins its value.
        by_name[name] = (where, override)

    dims: list[Dimension] = []
    fixed: list[str] = []
    order: list[tuple[str, Any]] = []
    for name, (where, override) in by_name.items():
        if not override.is_sweep_override():
            order.append(("fixed", len(fixed)))
            fixed.append(override.input_line or f"{override.get_key_element()}=")
            continue
        order.append(("dim", name))
        if override.is_hydra_override():
            raise SweepError(f"{where}: hydra.* settings cannot be searched; give {name} one value")
        if override.is_delete():
            raise SweepError(f"{where}: a deletion (~{name}) cannot be swept; drop the sweep")
        dims.append(_dimension(name, override, where, config_loader))
    names = [d.name for d in dims]
    return SearchSpace(dims=tuple(dims), fixed=tuple(fixed), conditions=parse_conditions(flatten(conditions or {}),
                                                                                         names), order=tuple(order))


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML (``schedule: {lr_max: ...}``) -> dotted keys (``schedule.lr_max``)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _value_text(value: Any) -> str:
    """A value from ``hydra.sweeper.params`` as override text (YAML may have typed it)."""
    if isinstance(value, str):
        return value
    return element_text(value)


def _plain(value: Any) -> Any:
    """A value parsed from an override as a trial gets it: quoted strings as their text."""
    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _plain_key(override: Override) -> str:
    """The key without its +/++/~ prefix: ``+a`` and ``a`` name the same config value."""
    if override.package is None:
        return override.key_or_group
    return f"{override.key_or_group}@{override.package}"


def _dimension(name: str, override: Override, where: str, config_loader: Any) -> Dimension:
    """One sweep override -> a Dimension, or a SweepError naming the unsupported part."""
    key = override.get_key_element()
    value = override.value()
    tags = getattr(value, "tags", set())
    if getattr(value, "shuffle", False):
        raise SweepError(
            f"{where}: shuffle(...) is not supported; the strategy decides the order, drop shuffle"
        )

    if override.value_type == ValueType.INTERVAL_SWEEP:
        assert isinstance(value, IntervalSweep)
        unknown = sorted(set(tags) - {"log"})
        if unknown:
            raise SweepError(
                f"{where}: tag {', '.join(unknown)} is not understood; "
                "the only tag is log, as in tag(log, interval(a, b))"
            )
        low, high = value.start, value.end
        assert low is not None and high is not None
        if not low < high:
            raise SweepError(
                f"{where}: interval({low}, {high}) is empty; write interval(a, b) with a < b"
            )
        log = "log" in tags
        if log and low <= 0:
            raise SweepError(f"{where}: tag(log, ...) needs a positive lower bound, not {low}")
        integer = isinstance(low, int) and isinstance(high, int)
        return Interval(name=name, key=key, low=low, high=high, log=log, integer=integer)

    if tags:
        raise SweepError(
            f"{where}: tag({', '.join(sorted(tags))}, ...) applies only to interval(a, b); "
            "drop the tag"
        )
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if config_loader is None:
            raise SweepError(
                f"{where}: glob(...) needs the app's config groups; list the options with choice(...)"
            )
        override.config_loader = config_loader
        form = "glob"
    elif override.value_type == ValueType.RANGE_SWEEP:
        assert isinstance(value, RangeSweep)
        form = "range"
    else:
        assert isinstance(value, ChoiceSweep)
        form = "choice"
    raw = list(override.sweep_iterator(transformer=Transformer.identity))
    if not raw:
        raise SweepError(f"{where}: {form}(...) of {name} has no values; give it at least one")
    values = tuple(_plain(x) for x in raw)
    texts = tuple(element_text(x) for x in raw)
    return Discrete(name=name, key=key, form=form, values=values, texts=texts)
