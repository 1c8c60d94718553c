"""Every use fastlab makes of Hydra's private API, each behind a check of what it relies on.

A fastlab sweep is cheap per trial because of four things Hydra (1.3) offers only privately:

- **composition** (``compose.ReusingConfigLoader``): a trial's values applied to a kept
  composition by ``ConfigLoaderImpl._apply_overrides_to_config``, and the ``hydra`` node's
  per-job fields set as ``ConfigLoaderImpl._load_configuration_impl`` sets them (with
  ``get_overrides_dirname``, from ``hydra._internal.config_loader_impl``);
- **shipping** (``ShippedSingletons``): ``Singleton.get_state`` replaced while a launch call runs,
  so a launcher ships one copy of Hydra's singletons, made once per sweep, and a job finds the
  plugins among them (``Singleton.set_state`` asks ``Plugins.instance()``, which reads
  ``Singleton._instances``);
- **job returns**: ``JobReturn._return_value``, what a job returned or raised, read without the
  public property's raising and its line on stderr;
- **override text**: ``Override._get_value_element_as_str``, a value written in the override
  grammar.

Nothing else in fastlab names them. Each piece is checked once per process, for exactly what
fastlab relies on: the name exists, it takes the arguments fastlab passes, and what it gives back
has the shape fastlab reads (a probe on a tiny input). When a check fails, that piece takes Hydra's
public path instead, and one warning line names what was missing: the launcher's own ``launch``
(Hydra copies its singletons on every call), ``ConfigLoader.load_sweep_config`` for every trial,
``JobReturn.return_value``, the override grammar written out by fastlab. The sweep runs the same
trials either way, only slower.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, QuotedString
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from fastlab.sweep import shipping

log = logging.getLogger(__name__)

COMPOSE, SHIPPING, RETURNS, TEXT = "compose", "shipping", "returns", "text"

# What each piece does instead when its check fails: Hydra's public path.
PUBLIC = {
    COMPOSE: "ConfigLoader.load_sweep_config composes every trial",
    SHIPPING: "the launcher's own launch, which copies Hydra's singletons on every call",
    RETURNS: "JobReturn.return_value",
    TEXT: "values written in Hydra's override grammar by fastlab",
}

_FOUND: dict[str, str | None] = {}  # piece -> None (fit), or what its check found, in one line
_UNCHECKED = object()
_LOCK = threading.RLock()


class Unfit(Exception):
    """What a check found wrong with a Hydra internal, in one line."""


def fit(piece: str) -> bool:
    """Whether ``piece``'s Hydra internals are as fastlab relies on; checked once per process (the
    first failure logs its one warning line)."""
    found = _FOUND.get(piece, _UNCHECKED)
    if found is _UNCHECKED:
        with _LOCK:
            if piece not in _FOUND:
                try:
                    _CHECKS[piece]()
                    _FOUND[piece] = None
                except Unfit as e:
                    turn_off(piece, str(e))
                except Exception as e:  # noqa: BLE001 - any surprise in a probe means: do not rely on it
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    turn_off(piece, f"Hydra's internals for the sweep's {piece} failed a check "
                                    f"({type(e).__name__}: {first})")
            found = _FOUND[piece]
    return found is None


def turn_off(piece: str, found: str) -> None:
    """``piece`` takes Hydra's public path for the rest of this process: one warning line."""
    with _LOCK:
        if isinstance(_FOUND.get(piece), str):
            return  # already off: warned once
        _FOUND[piece] = found
    log.warning(f"{found} (hydra-core {hydra.__version__}); the sweep uses Hydra's public path: "
                f"{PUBLIC[piece]}")


def forget() -> None:
    """Check every piece again on its next use (the installed Hydra changed in this process)."""
    with _LOCK:
        _FOUND.clear()
        _COMPOSE.clear()


# ------------------------------------------------------------------------------- the checks' tools
def _attribute(owner: Any, name: str, where: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        raise Unfit(f"Hydra's {where} is missing") from None


def _takes(fn: Any, where: str, *args: Any, **kwargs: Any) -> None:
    """``fn`` can be called as fastlab calls it: these arguments, these keywords."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise Unfit(f"Hydra's {where} is no longer a function") from None
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        wanted = ", ".join([*("_" for _ in args), *kwargs])
        raise Unfit(f"Hydra's {where}{signature} no longer takes ({wanted})") from None


def _parsed(lines: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(overrides=lines)


# ------------------------------------------------------------------------------------ composition
_COMPOSE: dict[str, Callable[..., Any]] = {}  # the checked functions: "apply", "dirname"


def _check_compose() -> None:
    try:
        module = importlib.import_module("hydra._internal.config_loader_impl")
    except ImportError:
        raise Unfit("Hydra's hydra._internal.config_loader_impl is missing") from None
    impl = _attribute(module, "ConfigLoaderImpl", "hydra._internal.config_loader_impl.ConfigLoaderImpl")
    where = "ConfigLoaderImpl._apply_overrides_to_config"
    apply = _attribute(impl, "_apply_overrides_to_config", where)
    _takes(apply, where, overrides=[], cfg=None)
    # It updates the config in place, value by value, adding with +: what a trial's values need.
    probe = OmegaConf.create({"a": 1, "b": {"c": "x"}})
    apply(overrides=_parsed(["a=2", "b.c=y", "+d=[1,2]"]), cfg=probe)
    if OmegaConf.to_container(probe) != {"a": 2, "b": {"c": "y"}, "d": [1, 2]}:
        raise Unfit(f"Hydra's {where} no longer updates the config in place")
    where = "hydra._internal.config_loader_impl.get_overrides_dirname"
    dirname = _attribute(module, "get_overrides_dirname", where)
    _takes(dirname, where, overrides=[], exclude_keys=[], item_sep=",", kv_sep="=")
    # Sorted, the excluded keys left out, key and value joined by kv_sep: hydra.job.override_dirname.
    got = dirname(overrides=_parsed(["b=2", "a=1", "c=3"]), exclude_keys=["c"], item_sep=",", kv_sep="~")
    if got != "a~1,b~2":
        raise Unfit(f"Hydra's {where} gives {got!r} for b=2 a=1 c=3 (c excluded, kv_sep ~), not 'a~1,b~2'")
    _COMPOSE.update(apply=apply, dirname=dirname)


def composes() -> bool:
    """Whether a trial may be composed from a kept composition (``compose.ReusingConfigLoader``)."""
    return fit(COMPOSE)


def apply_overrides(overrides: list[Override], cfg: DictConfig) -> None:
    """Hydra's own application of value overrides to a composed config, in place (after
    ``composes()``)."""
    _COMPOSE["apply"](overrides=overrides, cfg=cfg)


def _job_fields(cfg: DictConfig, parsed: Sequence[Override]) -> dict[str, Any]:
    """The ``hydra`` node's per-job fields for these override lines, as
    ``ConfigLoaderImpl._load_configuration_impl`` sets them."""
    app = [o for o in parsed if not o.is_hydra_override()]
    dirname = cfg.hydra.job.config.override_dirname
    return {
        "overrides.hydra": [o.input_line for o in parsed if o.is_hydra_override()],
        "overrides.task": [o.input_line for o in app],
        "job.override_dirname": _COMPOSE["dirname"](
            overrides=app, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys),
    }


def job_fields_hold(cfg: DictConfig, parsed: Sequence[Override]) -> bool:
    """Whether ``cfg``, which Hydra composed from ``parsed``, has the per-job fields fastlab would
    set for them (checked on each composition kept); if not, composition takes Hydra's public path
    from now on."""
    try:
        expected = _job_fields(cfg, parsed)
        found = {path: OmegaConf.select(cfg.hydra, path, throw_on_missing=True) for path in expected}
        found = {path: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for path, v in found.items()}
    except Exception as e:  # noqa: BLE001 - a node that moved: the same verdict
        turn_off(COMPOSE, "Hydra's composed hydra node no longer has hydra.job.config.override_dirname "
                          f"and the per-job fields fastlab sets ({type(e).__name__})")
        return False
    differ = [f"hydra.{path}" for path in expected if found[path] != expected[path]]
    if differ:
        turn_off(COMPOSE, f"Hydra's ConfigLoaderImpl._load_configuration_impl no longer sets "
                          f"{', '.join(differ)} as fastlab re-derives them")
        return False
    return True


def set_job_fields(cfg: DictConfig, parsed: Sequence[Override]) -> None:
    """Set the ``hydra`` node's per-job fields of a trial composed from a kept composition."""
    fields = _job_fields(cfg, parsed)
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.hydra = fields["overrides.hydra"]
        cfg.hydra.overrides.task = fields["overrides.task"]
        cfg.hydra.job.override_dirname = fields["job.override_dirname"]


# --------------------------------------------------------------------------------------- shipping
def _check_shipping() -> None:
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    if not isinstance(Singleton.__dict__.get("get_state"), staticmethod):
        raise Unfit("Hydra's Singleton.get_state is missing" if "get_state" not in Singleton.__dict__
                    else "Hydra's Singleton.get_state is no longer a static method")
    _takes(_attribute(Singleton, "set_state", "Singleton.set_state"), "Singleton.set_state", {})
    # A job's set_state finds the plugins among the instances it is given (ShippedInstances).
    plugins = Plugins.instance()
    instances = getattr(Singleton, "_instances", None)
    if not isinstance(instances, dict) or instances.get(Plugins) is not plugins:
        raise Unfit("Hydra's Singleton._instances no longer holds Plugins.instance()")


class ShippedSingletons:
    """Hydra's launchers that run jobs elsewhere (joblib, submitit, ray) call
    ``Singleton.get_state()`` on every launch call to ship Hydra's singletons to their jobs: a deep
    copy of the config store with every schema and of the composed config, about 35 ms of the
    driver's time per call, and one call per trial when launching asynchronously. Nothing in them
    changes while the driver sweeps (the jobs change their own copies), so one copy, made and
    pickled once per sweep (``ShippedInstances``), serves every call: ``installed()`` puts it in
    ``Singleton.get_state``'s place for the duration of a launch call, and puts Hydra's back after
    it, error or not. Launch calls on several threads at once share one installation.
    """

    def __init__(self, state: dict) -> None:
        self.state = state

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from hydra.core.singleton import Singleton

        with _LOCK:
            if _INSTALLED["depth"] == 0:
                _INSTALLED["hydras"] = Singleton.__dict__["get_state"]  # the staticmethod itself
                state = self.state
                Singleton.get_state = staticmethod(lambda: state)
            _INSTALLED["depth"] += 1
        try:
            yield
        finally:
            with _LOCK:
                _INSTALLED["depth"] -= 1
                if _INSTALLED["depth"] == 0:
                    Singleton.get_state = _INSTALLED.pop("hydras")


# Launch calls inside ShippedSingletons.installed() now, and Hydra's get_state while there are any.
_INSTALLED: dict[str, Any] = {"depth": 0}


def shipped_singletons() -> ShippedSingletons | None:
    """This sweep's copy of Hydra's singletons, made now, or None when launch calls must ship
    their own (Hydra's public path)."""
    if not fit(SHIPPING):
        return None
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()
    if not isinstance(state, dict) or not isinstance(state.get("instances"), dict):
        turn_off(SHIPPING, "Hydra's Singleton.get_state() no longer returns a dict with the "
                           f"singletons under 'instances' (got {type(state).__name__})")
        return None
    return ShippedSingletons(dict(state, instances=ShippedInstances(state["instances"])))


class ShippedInstances(dict):
    """Hydra's singletons as ``Singleton.get_state()`` ships them to a job: pickled once by the
    driver and unpickled once per job process (``fastlab.sweep.shipping``).

    ``set_state`` then re-discovers Hydra's plugins unless they are among the instances, about
    30 ms per job of walking and importing the plugin packages; the installed plugins do not
    change while a process runs, so a job process discovers them once (``_restored``).
    """

    def __init__(self, instances: Mapping) -> None:
        super().__init__(instances)
        self.token = secrets.token_hex(8)
        self.blob = shipping.blob(dict(instances))

    def __reduce__(self) -> tuple:
        if self.blob is None:
            return dict, (dict(self),)
        return _restored, (self.token, self.blob)


def _restored(token: str, blob: bytes) -> dict:
    """A job process's copy of the shipped singletons, with the plugins it already discovered."""
    from hydra.core.plugins import Plugins

    # Discover the plugins before unpickling: discovery executes the plugin modules again, and
    # the schemas in the config store must be the classes their modules hold afterwards, or no
    # config composed from them pickles ("not the same object"). Once per process.
    plugins = Plugins.instance()
    return shipping.received(token, blob, lambda instances: {**instances, Plugins: plugins})


# ------------------------------------------------------------------------------------ job returns
def _check_returns() -> None:
    for status, value in ((JobStatus.COMPLETED, 0.5), (JobStatus.FAILED, RuntimeError("probe"))):
        ret = JobReturn()
        ret.status = status
        ret.return_value = value  # Hydra's run_job sets it so, the raised exception for a failure
        if getattr(ret, "_return_value", ret) is not value:
            raise Unfit("Hydra's JobReturn._return_value no longer holds what JobReturn.return_value "
                        f"was set to ({status.name})")


def returned(ret: JobReturn) -> Any:
    """What the job returned, or for a failed job the exception it raised (None when there is
    neither, e.g. a job whose status is unknown)."""
    if fit(RETURNS):
        return ret._return_value
    if ret.status == JobStatus.COMPLETED:
        return ret.return_value
    if ret.status != JobStatus.FAILED:
        return None  # the public property asserts a known status
    try:
        ret.return_value  # raises what the job raised (and says so on stderr)  # noqa: B018
    except Exception as e:  # noqa: BLE001 - that is the job's error, recorded as its trial's
        return e
    return None


# ---------------------------------------------------------------------------------- override text
# Read back through Hydra's parser by the check: every kind of value a sweep's space may hold.
_PROBE = ["a b", "x=y(1)", "back\\slash", 1, 2.5, -0.001, 1e-05, True, None, [1, "c,d"], {"k": "v:w"}]


def _check_text() -> None:
    where = "Override._get_value_element_as_str"
    text = _attribute(Override, "_get_value_element_as_str", where)
    _takes(text, where, _PROBE)
    written = text(_PROBE)
    if not isinstance(written, str):
        raise Unfit(f"Hydra's {where} no longer returns a string (got {type(written).__name__})")
    if _parsed([f"k={written}"])[0].value() != _PROBE:
        raise Unfit(f"Hydra's {where} no longer writes values that Hydra's parser reads back as given")


def element_text(value: Any) -> str:
    """``value`` (one parsed from an override, or typed by YAML) as override text: what follows
    ``key=`` in an override that gives exactly this value."""
    if fit(TEXT):
        return Override._get_value_element_as_str(value)
    return written(value)


# The characters an unquoted value escapes with a backslash (Hydra's override grammar, ESC).
_ESCAPED = "\\()[]{}:=, \t"


def written(value: Any) -> str:
    """``value`` as override text, written by fastlab after Hydra's override grammar: null,
    booleans and numbers as Python writes them, quoted strings with their quotes, other strings
    with the grammar's special characters escaped, lists and dicts element by element."""
    if value is None:
        return "null"
    if isinstance(value, QuotedString):
        return value.with_quotes()
    if isinstance(value, list | tuple):
        return "[" + ",".join(written(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{written(k)}:{written(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        out = value.replace("\\", "\\\\")  # first, so the escapes added next stay single
        for char in _ESCAPED[1:]:
            out = out.replace(char, f"\\{char}")
        return out
    if isinstance(value, bool | int | float):
        return str(value)
    if dataclasses.is_dataclass(value) or OmegaConf.is_config(value):
        return written(OmegaConf.to_container(OmegaConf.structured(value) if dataclasses.is_dataclass(value)
                                              else value))
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as an override value")


_CHECKS: dict[str, Callable[[], None]] = {
    COMPOSE: _check_compose,
    SHIPPING: _check_shipping,
    RETURNS: _check_returns,
    TEXT: _check_text,
}
