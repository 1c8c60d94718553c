"""The Learner's optimiser: param groups (layer group x decay or not) and fastai's ``opt_func``.

An ``opt_func`` is anything called as ``opt_func(param_groups, lr=...)`` that returns a
``torch.optim.Optimizer``: a torch.optim class, a ``functools.partial`` of one, or a function.
The built-in names (``adamw``, ``sgd``) are such partials with fast.ai's settings. Whatever the
optimiser, the schedule drives its rate per group and its momentum (``betas[0]`` or
``momentum``) where it has one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fastlab.errors import ConfigError

OptFunc = Callable[..., torch.optim.Optimizer]

OPTIMIZERS = ("adamw", "sgd")


def is_no_decay(name: str, p: nn.Parameter) -> bool:
    """Biases and norm-layer parameters (1-D): what fast.ai's ``wd_bn_bias=False`` leaves undecayed."""
    return p.ndim <= 1 or name.endswith(".bias")


def param_groups(groups: Sequence[nn.Module], wd: float, wd_bn_bias: bool = False) -> list[dict]:
    """One optimiser param group per (layer group, decay or not), tagged with ``layer_group`` so
    schedulers can scale each layer group's rate. Parameters shared by two groups count once.
    With ``wd_bn_bias`` biases and norm parameters are decayed too (one group per layer group)."""
    seen: set[int] = set()
    out = []
    for g, module in enumerate(groups):
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if not wd_bn_bias and is_no_decay(name, p) else decay).append(p)
        for params, group_wd in ((decay, wd), (no_decay, 0.0)):
            if params:
                out.append({"params": params, "weight_decay": group_wd, "layer_group": g})
    return out


def check_settings(sqr_mom: float, eps: float, wd: float) -> None:
    """One-line errors for optimiser settings that torch would reject mid-run (or never)."""
    if not 0.0 <= sqr_mom < 1.0:
        raise ConfigError(f"sqr_mom (AdamW's beta2) must lie in [0, 1), got {sqr_mom}: fast.ai uses 0.99")
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps must be a positive finite number, got {eps}: fast.ai uses 1e-5, torch 1e-8")
    if not (math.isfinite(wd) and wd >= 0):
        raise ConfigError(f"wd must be a finite number >= 0, got {wd}: e.g. 0.01")


def builtin_opt_func(name: str, sqr_mom: float = 0.99, eps: float = 1e-5) -> OptFunc:
    """``adamw``: torch's AdamW with betas ``(0.9, sqr_mom)`` and ``eps`` (fast.ai's Adam defaults);
    ``sgd``: SGD with momentum 0.9. The schedule then sets beta1 / momentum every batch."""
    if name == "adamw":
        return functools.partial(torch.optim.AdamW, betas=(0.9, sqr_mom), eps=eps)
    if name == "sgd":
        return functools.partial(torch.optim.SGD, momentum=0.9)
    raise ConfigError(f"unknown optimiser {name!r}: use one of {', '.join(OPTIMIZERS)}, or pass opt_func")


def build_optimizer(opt_func: OptFunc, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """``opt_func(groups, lr=lr)``, checked: it must be a torch optimiser that kept the groups'
    ``layer_group`` tags (the schedule scales each layer group's rate by them)."""
    opt = opt_func(groups, lr=lr)
    if not isinstance(opt, torch.optim.Optimizer):
        raise ConfigError(f"opt_func returned {type(opt).__name__}, not a torch.optim.Optimizer: pass e.g. "
                          "torch.optim.AdamW or functools.partial(torch.optim.SGD, nesterov=True, momentum=0.9)")
    if any("layer_group" not in g for g in opt.param_groups):
        raise ConfigError("opt_func's optimiser dropped the param groups' 'layer_group' key: pass the groups "
                          "it is given to the torch.optim constructor unchanged")
    return opt


def make_optimizer(name: str, groups: list[dict], lr: float, mom: float, sqr_mom: float = 0.99,
                   eps: float = 1e-5) -> torch.optim.Optimizer:
    """A built-in optimiser by name (AdamW: momentum = beta1; SGD with momentum), from torch.optim."""
    opt = build_optimizer(builtin_opt_func(name, sqr_mom, eps), groups, lr)
    for group in opt.param_groups:
        set_momentum(group, mom)
    return opt


def set_momentum(group: dict, mom: float) -> None:
    """Adam's beta1, or SGD's (RMSprop's) momentum; an optimiser with neither is left as it is."""
    if "betas" in group:
        group["betas"] = (mom, group["betas"][1])
    elif "momentum" in group:
        group["momentum"] = mom
