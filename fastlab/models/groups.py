"""``arch.groups``: how a body of stages splits into layer groups (the head is always one more,
the last). ULMFiT's 2.6 rule gives group ``g`` of ``n`` the rate ``lr / 2.6**(n-1-g)``, so the
number of groups sets the range of the rates, and it is a setting of its own here.

- ``halves``: two body groups, the first one stage larger when the count is odd (fastai's split;
  one group for a one-stage body).
- ``stages``: one group per stage.
- an integer ``n >= 2``: ``n - 1`` body groups, the stages spread over them in order as evenly as
  possible, the earlier groups one stage larger when they cannot be equal (so ``3`` is
  ``halves``); at most ``stages + 1``.

Grouping never changes the weights: a checkpoint fits a model of any ``arch.groups``.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from fastlab.errors import ConfigError

NAMED = ("halves", "stages")
FIX = "use halves, stages or an integer >= 2, e.g. arch.groups=stages"


def parse_groups(spec: Any) -> str | int:
    """``arch.groups`` as given (``5`` from the command line, a quoted ``'5'``, or a word) as
    ``"halves"``, ``"stages"`` or an int >= 2; anything else is one ``ConfigError`` line."""
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, bool) or not isinstance(spec, int | str) or (isinstance(spec, str) and spec not in NAMED):
        raise ConfigError(f"arch.groups={spec!r} is not a way to split the body into layer groups: {FIX}")
    if isinstance(spec, int) and spec < 2:
        raise ConfigError(f"arch.groups={spec} is too few: the body and the head are two layer groups at the "
                          f"least; {FIX}")
    return spec


def split_points(n_stages: int, spec: Any, what: str = "the body") -> tuple[int, ...]:
    """The stage indices where a new body group starts (after stage 0), for ``n_stages`` stages
    split as ``spec`` says (see the module). ``what`` names the body in the error for an ``n``
    above ``n_stages + 1``.

    >>> split_points(5, "halves"), split_points(5, "stages"), split_points(5, 4), split_points(1, "halves")
    ((3,), (1, 2, 3, 4), (2, 4), ())
    """
    if n_stages < 1:
        raise ValueError(f"a body needs at least one stage, got {n_stages}")
    spec = parse_groups(spec)
    if spec == "stages":
        n_body = n_stages
    elif spec == "halves":
        n_body = min(2, n_stages)
    else:
        n_body = spec - 1
        if n_body > n_stages:
            raise ConfigError(f"arch.groups={spec} is more layer groups than {what} has: its {n_stages} stage(s) and "
                              f"the head make at most {n_stages + 1}; use arch.groups={n_stages + 1} (or stages) "
                              "or fewer")
    q, r = divmod(n_stages, n_body)
    sizes = [q + 1] * r + [q] * (n_body - r)  # the earlier groups take the extra stages
    return tuple(accumulate(sizes))[:-1]
