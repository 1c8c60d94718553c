"""``hydra.sweeper.conditions``: a key swept only in the trials where an expression holds.

``{schedule.wd: "schedule.opt == 'adamw'", schedule.mom: "schedule.opt == 'sgd'"}``: in a trial
whose ``schedule.opt`` is ``sgd``, ``schedule.wd`` is not overridden (it keeps its config value)
and is recorded as absent; ``schedule.mom`` is swept. An expression is Python's syntax for a
small language, read with :mod:`ast` and evaluated here, never with ``eval``:

- names are swept keys, dotted as in the overrides (``schedule.opt``, ``data.bs``);
- constants: strings, numbers, ``true``/``false``/``True``/``False``, ``null``/``None``, and lists
  or tuples of them;
- comparisons ``==  !=  <  <=  >  >=  in  not in`` (chained, as ``2 <= data.bs < 64``), joined by
  ``and``, ``or`` and ``not``, with parentheses.

A key one condition names may itself be conditional: where it is absent, every comparison with it
is false, so what depends on it is absent too. Conditions are checked before anything runs: a
condition on a key that is not swept, an expression naming one, or conditions that depend on each
other in a circle stop the sweep with one line.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastlab.sweep.errors import SweepError

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
# YAML's spellings of the constants, as overrides write them
_WORDS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class _Absent:
    """The value of a key that is absent from a trial: no comparison with it holds."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


@dataclass(frozen=True, eq=False)
class Condition:
    """``key`` is swept where ``text`` holds; ``names`` are the swept keys ``text`` reads."""

    key: str
    text: str
    tree: ast.expr
    names: tuple[str, ...]

    def holds(self, params: Mapping[str, Any]) -> bool:
        """Whether the expression holds for a trial's ``params`` (absent keys hold no comparison)."""
        try:
            return evaluate(self.tree, params)
        except TypeError as e:  # e.g. 'adamw' < 3: the expression compares values of other types
            raise SweepError(f"hydra.sweeper.conditions.{self.key}: {self.text!r} cannot be evaluated for "
                             f"{dict(params)} ({e}): compare each key with values of its own type") from None


def _where(key: str, text: str) -> str:
    return f"hydra.sweeper.conditions.{key}={text!r}"


def _dotted(node: ast.expr) -> str | None:
    """``schedule.opt`` (an Attribute chain over a Name) as its dotted text; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _check(node: ast.expr, where: str, names: list[str]) -> None:
    """Refuse every node the language does not have; collect the names it reads into ``names``."""
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, where, names)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        _check(node.operand, where, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise SweepError(f"{where}: the comparison {type(op).__name__} is not allowed; use "
                                 "==, !=, <, <=, >, >=, in or not in")
        for operand in (node.left, *node.comparators):
            _check(operand, where, names)
    elif isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            _check(element, where, names)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise SweepError(f"{where}: {node.value!r} is not a constant an expression can hold; use "
                             "strings, numbers, true/false or null")
    elif (name := _dotted(node)) is not None:
        if name not in _WORDS:
            names.append(name)
    else:
        raise SweepError(f"{where}: {ast.unparse(node)!r} is not allowed in an expression; write "
                         "comparisons of names with constants, e.g. \"schedule.opt == 'adamw'\"")


def parse_expression(text: Any, where: str, example: str) -> tuple[ast.expr, tuple[str, ...]]:
    """An expression of the language above (its tree and the names it reads), or one
    ``SweepError`` line starting with ``where`` (``example``: a fix to show)."""
    if not isinstance(text, str) or not text.strip():
        raise SweepError(f"{where}: give an expression in quotes, e.g. {example}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise SweepError(f"{where}: cannot parse it ({e.msg}); write e.g. {example}") from None
    names: list[str] = []
    _check(tree, where, names)
    return tree, tuple(dict.fromkeys(names))


def evaluate(tree: ast.expr, values: Mapping[str, Any]) -> bool:
    """Whether ``tree`` holds for ``values`` (a name without a value holds no comparison);
    ``TypeError`` when it compares values of other types."""
    return bool(_evaluate(tree, values))


def _evaluate(node: ast.expr, params: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(v, params) for v in node.values)
        return any(_evaluate(v, params) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, params)
        if isinstance(node.op, ast.Not):
            return not value
        return ABSENT if value is ABSENT else -value
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, params)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, params)
            if left is ABSENT or right is ABSENT or not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(e, params) for e in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    name = _dotted(node)
    if name in _WORDS:
        return _WORDS[name]
    return params.get(name, ABSENT)


def parse_condition(key: str, text: Any, swept: Sequence[str]) -> Condition:
    """One ``hydra.sweeper.conditions`` entry, checked against the swept keys ``swept``."""
    if key not in swept:
        raise SweepError(f"{_where(key, text)}: {key} is not swept, so it has nothing to make conditional: "
                         f"sweep it (e.g. {key}=choice(...)) or drop its condition; swept keys: {list(swept)}")
    tree, names = parse_expression(text, _where(key, text), "\"schedule.opt == 'adamw' and schedule.epochs > 3\"")
    for name in names:
        if name == key:
            raise SweepError(f"{_where(key, text)}: a key's condition cannot read the key itself; write it "
                             "over the other swept keys")
        if name not in swept:
            raise SweepError(f"{_where(key, text)}: {name} is not a swept key; conditions read swept keys only: "
                             f"{[s for s in swept if s != key]}")
    return Condition(key, text.strip(), tree, names)


def parse_conditions(conditions: Mapping[str, Any] | None, swept: Sequence[str]) -> tuple[Condition, ...]:
    """Every condition, in an order where a key's condition comes after those of the keys it reads
    (so one pass settles which keys a trial has); conditions in a circle are refused."""
    parsed = {key: parse_condition(key, text, swept) for key, text in dict(conditions or {}).items()}
    ordered: list[Condition] = []
    state: dict[str, str] = {}

    def visit(key: str, path: tuple[str, ...]) -> None:
        if state.get(key) == "done" or key not in parsed:
            return
        if state.get(key) == "visiting":
            circle = " -> ".join([*path[path.index(key):], key])
            raise SweepError(f"hydra.sweeper.conditions depend on each other in a circle ({circle}): break it")
        state[key] = "visiting"
        for name in parsed[key].names:
            visit(name, (*path, key))
        state[key] = "done"
        ordered.append(parsed[key])

    for key in parsed:
        visit(key, ())
    return tuple(ordered)


def active(params: Mapping[str, Any], conditions: Sequence[Condition]) -> dict[str, Any]:
    """``params`` without the keys whose condition does not hold (``conditions`` in
    :func:`parse_conditions`' order)."""
    out = dict(params)
    for condition in conditions:
        if condition.key in out and not condition.holds(out):
            del out[condition.key]
    return out
