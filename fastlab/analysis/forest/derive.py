"""``--derive NAME=EXPR``: a column computed from other columns, analysed like any parameter.

    fastlab-meta SWEEP --derive 'lr_low=schedule.lr_max/schedule.lr_ratio**(layer_groups-1)'

The lowest layer group's rate is a function of two swept parameters and one fact of each run; a
forest that sees it as one column can tell whether the optimum is a band of that rate rather than
of the ratio. The columns an expression may read are the sweep's numeric parameters by their
override names (``schedule.lr_max``), its fixed numeric overrides, each trial's top-level numbers
from ``metrics.json`` (``layer_groups``, ``epochs``; a parameter of the same name wins) and the
columns derived before it.

The expression is parsed with :mod:`ast` and never handed to ``eval``: only numbers, column names,
``+ - * / **``, unary minus (and plus), parentheses and the functions in :data:`FUNCTIONS` are
allowed, and it is evaluated with numpy on float64 columns (so ``9**9**9`` is ``inf``, not an
hour of integer arithmetic). A trial where it is not finite keeps no value for the column; the
encoding leaves such trials out and the report counts them.
"""

from __future__ import annotations

import ast
import keyword
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import TrialsTable

# name -> (function on arrays, number of arguments; None: two or more)
FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], int | None]] = {
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "exp": (np.exp, 1),
    "sqrt": (np.sqrt, 1),
    "abs": (np.abs, 1),
    "min": (lambda *a: reduce(np.minimum, a), None),
    "max": (lambda *a: reduce(np.maximum, a), None),
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
    ast.Pow: np.power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: np.negative, ast.UAdd: np.positive}
ALLOWED = ("numbers, column names, + - * / **, unary minus, parentheses and the functions "
           + ", ".join(FUNCTIONS))
EXAMPLE = "lr_low=schedule.lr_max/schedule.lr_ratio**(layer_groups-1)"

# What a refused node is called in the one-line error.
_REFUSED = {
    ast.Attribute: "attribute access", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
    ast.Compare: "a comparison", ast.BoolOp: "and/or", ast.IfExp: "if/else",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.ListComp: "a comprehension", ast.GeneratorExp: "a comprehension",
    ast.DictComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.JoinedStr: "an f-string", ast.NamedExpr: "an assignment (:=)", ast.Starred: "a star",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}


@dataclass(frozen=True)
class Derived:
    """One parsed ``--derive NAME=EXPR``.

    Attributes
    ----------
    name : the new column's name, a plain identifier.
    expr : the expression as given.
    reads : the column names it reads, in order of first use (dotted override keys included).
    tree : the checked expression's ``ast`` body.
    """

    name: str
    expr: str
    reads: tuple[str, ...]
    tree: ast.expr = field(compare=False, repr=False)


def _fail(name: str, expr: str, what: str) -> MetaError:
    return MetaError(f"--derive {name}={expr}: {what} is not allowed; use {ALLOWED}")


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` written as names -> ``"a.b.c"`` (an override key); anything else -> None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _check(node: ast.expr, name: str, expr: str, reads: list[str]) -> None:
    """Refuse every node that is not in the allowed grammar; collect the column names read."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _fail(name, expr, f"the constant {v!r}")
        return
    if isinstance(node, ast.Name | ast.Attribute):
        key = _dotted(node)
        # a dotted name is an override key (schedule.lr_max), never an attribute that is looked up;
        # dunder parts are refused outright, so the message names what they are
        if key is None or any(part.startswith("__") for part in key.split(".")):
            raise _fail(name, expr, f"attribute access ({ast.unparse(node)})")
        if key not in reads:
            reads.append(key)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _fail(name, expr, f"the operator in {ast.unparse(node)}")
        _check(node.left, name, expr, reads)
        _check(node.right, name, expr, reads)
        return
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise _fail(name, expr, f"the operator in {ast.unparse(node)}")
        _check(node.operand, name, expr, reads)
        return
    if isinstance(node, ast.Call):
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func not in FUNCTIONS:
            raise _fail(name, expr, f"a call to {ast.unparse(node.func)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _fail(name, expr, f"keyword or star arguments in {ast.unparse(node)}")
        arity = FUNCTIONS[func][1]
        if (arity is None and len(node.args) < 2) or (arity is not None
                                                      and len(node.args) != arity):
            want = "two or more arguments" if arity is None else f"{arity} argument"
            raise MetaError(f"--derive {name}={expr}: {func} takes {want}, not "
                            f"{len(node.args)} ({ast.unparse(node)})")
        for a in node.args:
            _check(a, name, expr, reads)
        return
    what = _REFUSED.get(type(node), type(node).__name__)
    raise _fail(name, expr, f"{what} ({ast.unparse(node)})")


def parse_derive(text: str) -> Derived:
    """``NAME=EXPR`` -> a checked :class:`Derived` (names are checked against the columns later,
    by :func:`with_derived`).

    Raises
    ------
    MetaError
        No ``=``, a NAME that is not a plain identifier, an expression that does not parse, or one
        that uses anything outside the allowed grammar (the message names what).
    """
    name, sep, expr = text.partition("=")
    name, expr = name.strip(), expr.strip()
    if not sep or not expr:
        raise MetaError(f"--derive {text!r}: give NAME=EXPR, e.g. --derive '{EXAMPLE}'")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise MetaError(f"--derive {text!r}: NAME {name!r} must be a plain identifier (letters, "
                        "digits and _, not starting with a digit), e.g. lr_low")
    try:
        tree = ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError, RecursionError) as e:
        why = getattr(e, "msg", None) or type(e).__name__
        raise MetaError(f"--derive {name}={expr}: not an expression ({why}); e.g. "
                        f"--derive '{EXAMPLE}'") from None
    reads: list[str] = []
    _check(tree, name, expr, reads)
    return Derived(name, expr, tuple(reads), tree)


def evaluate(d: Derived, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The derived column over ``n`` trials, shape (n,) float64; NaN or inf where it is not finite.

    ``columns`` maps every name ``d`` reads to an (n,) float array (NaN where a trial has none).
    """
    def ev(node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return np.float64(node.value)
        if isinstance(node, ast.Name | ast.Attribute):
            return columns[_dotted(node)]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id][0](*(ev(a) for a in node.args))
        raise AssertionError(f"unchecked node {ast.dump(node)}")  # parse_derive refused it

    with np.errstate(all="ignore"):  # log(0), x/0, overflow: non-finite, and left out
        out = ev(d.tree)
    return np.broadcast_to(np.asarray(out, dtype=float), (n,)).copy()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def numeric_columns(table: TrialsTable) -> tuple[dict[str, np.ndarray], set[str]]:
    """Every column an expression may read, each (n,) float (NaN where a trial has none), and
    the names of the swept parameters that are not numeric (for the error that names them).

    Order of precedence: swept parameters, fixed overrides, then ``metrics.json`` facts.
    """
    n = len(table)
    columns: dict[str, np.ndarray] = {}
    non_numeric: set[str] = set()
    for name in table.names:
        values = [p.get(name) for p in table.params]
        present = [v for v in values if v is not None]
        if present and all(_is_number(v) for v in present):
            columns[name] = np.asarray([float(v) if _is_number(v) else math.nan for v in values])
        else:
            non_numeric.add(name)
    for name, v in table.fixed.items():
        if name not in columns and name not in non_numeric and _is_number(v):
            columns[name] = np.full(n, float(v))
    facts = table.metrics if len(table.metrics) == n else ({},) * n
    for key in sorted({k for m in facts for k in m}):
        if key not in columns and key not in non_numeric:
            columns[key] = np.asarray([m.get(key, math.nan) for m in facts], dtype=float)
    return columns, non_numeric


def with_derived(table: TrialsTable, specs: Sequence[str | Derived]) -> TrialsTable:
    """``table`` with one more swept column per spec, in order (a later one may read an earlier
    one). A trial where the value is not finite gets no value for the column.

    Raises
    ------
    MetaError
        A bad spec (:func:`parse_derive`), a NAME that is already a column, a name the expression
        reads that is not a numeric column (the message lists the columns), or an expression that
        is finite for no trial.
    """
    if not specs:
        return table
    columns, non_numeric = numeric_columns(table)
    n = len(table)
    names, params, exprs = list(table.names), [dict(p) for p in table.params], dict(table.derived)
    for spec in specs:
        d = spec if isinstance(spec, Derived) else parse_derive(spec)
        if d.name in columns or d.name in non_numeric or d.name in names:
            raise MetaError(f"--derive {d.name}={d.expr}: {d.name} is already a column; "
                            "choose a new name")
        for key in d.reads:
            if key in non_numeric:
                raise MetaError(f"--derive {d.name}={d.expr}: {key} is not numeric (its values "
                                "are labels): use a numeric column")
            if key not in columns:
                raise MetaError(f"--derive {d.name}={d.expr}: unknown name {key!r}; the columns "
                                f"are: {', '.join(sorted(columns)) or 'none'}")
        values = evaluate(d, columns, n)  # (n,)
        finite = np.isfinite(values)
        if not finite.any():
            raise MetaError(f"--derive {d.name}={d.expr} is not finite for any trial: check the "
                            "expression (log of 0 or of a negative number? a division by 0?)")
        for i in np.flatnonzero(finite):
            params[i][d.name] = float(values[i])
        columns[d.name] = np.where(finite, values, math.nan)
        names.append(d.name)
        exprs[d.name] = d.expr
    return replace(table, names=tuple(names), params=tuple(params), derived=exprs)


def without_collinear(table: TrialsTable, focus: str | None) -> tuple[TrialsTable, dict[str, str]]:
    """The basis the forest sees: each derived column replaces the last swept parameter it reads
    that is not ``focus``, since it is a function of it (and of the others it reads).

    Keeping both would let partial dependence set a derived column apart from the columns it is
    computed from: ``lr_low`` at 1e-5 while ``schedule.lr_max`` and ``schedule.lr_ratio`` say 1e-3,
    a combination no trial could have. With ``lr_low = lr_max / ratio^(groups - 1)`` and the focus
    on the ratio, the basis is (ratio, lr_low): the ratio's effect with the lowest rate held. A
    column derived from the focus alone is dropped instead (it would only repeat it).

    Returns
    -------
    The table with ``names`` reduced (``params`` keep every value), and ``{derived: replaced}``
    (``{derived: derived}`` for one dropped).
    """
    names = list(table.names)
    replaced: dict[str, str] = {}
    for name, expr in table.derived.items():
        reads = parse_derive(f"{name}={expr}").reads
        swept = [r for r in reads if r in names and r != name]
        others = [r for r in swept if r != focus]
        if others:
            names.remove(others[-1])
            replaced[name] = others[-1]
        elif swept:  # a function of the focus alone
            names.remove(name)
            replaced[name] = name
    return replace(table, names=tuple(names)), replaced
