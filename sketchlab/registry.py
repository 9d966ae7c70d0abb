"""Turns config nodes into objects, building only an allow-list of sketchlab and torch components.

Hydra's ``instantiate`` imports and calls any dotted path a config names, and Hydra itself builds
``hydra.callbacks``, ``hydra.launcher`` and ``hydra.sweeper`` (and configures logging) from the
composed config. A config file or a command-line override could thus run arbitrary code.

- :func:`build` resolves a node's interpolations first, checks every ``_target_`` of the resolved
  data (and of its plain-data kwargs) with :func:`check_targets`, then instantiates exactly that data.
- Allowed targets: public classes and functions defined in sketchlab (see :func:`components`;
  ``sketchlab.cli`` and a few non-component modules excluded; a public re-export of an allowed one is fine),
  and classes under ``torch.optim`` (optimizers), ``torch.optim.lr_scheduler`` (schedulers) and
  ``torch.nn`` (modules), each checked on the located object: a class defined in that namespace
  that subclasses the namespace's base. No name part may start with ``_``.
- :func:`guard_hydra` makes Hydra run :func:`check_hydra_config` on every config it composes in
  this process, so callbacks, launcher, sweeper and logging factories are checked before Hydra
  builds any of them.

Not covered here: what allowed components do with their plain-data arguments (files they read are
made safe where they are read: :mod:`sketchlab.data.safe_npz`, :mod:`sketchlab.engine.checkpoint`), and
per-job sweep configs that a launcher composes in its worker processes (joblib, submitit), where no
guard is installed (the parent process has already checked the same config groups).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

# Modules whose names configs may not build: the entry points, this module, helpers that read
# pickles or fetch URLs (torch.load of a config-named file would run code), and the MLflow serving
# model (no config component; importing it loads mlflow.pyfunc).
EXCLUDED_MODULES = ("sketchlab.cli", "sketchlab.registry", "sketchlab.factory", "sketchlab.config",
                    "sketchlab.engine.checkpoint", "sketchlab.data.download", "sketchlab.tracking.provenance",
                    "sketchlab.tracking.serving")
# (dotted prefix, base class path) for torch; the first matching prefix decides.
TORCH_NAMESPACES = (
    ("torch.optim.lr_scheduler", "torch.optim.lr_scheduler.LRScheduler"),
    ("torch.optim", "torch.optim.Optimizer"),
    ("torch.nn", "torch.nn.Module"),
)
HYDRA_PLUGIN_PREFIXES = ("hydra_plugins.", "hydra._internal.core_plugins.")
LOGGING_PREFIXES = ("logging.", "colorlog.")
ALLOWED = ("public sketchlab classes and functions (not sketchlab.cli), torch.optim optimizer classes, "
           "torch.optim.lr_scheduler scheduler classes, torch.nn Module classes")
_DOTTED = re.compile(r"[A-Za-z]\w*(\.[A-Za-z]\w*)*")


class ConfigError(ValueError):
    """A config names something that cannot or may not be built."""


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _plain(node: Any) -> Any:
    """``node`` as plain dicts/lists with every interpolation resolved (sub-nodes resolve against their root)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def _where(node: Any) -> str:
    """The path of a config node inside its root ('' for a root or plain data), for error messages."""
    if isinstance(node, (DictConfig, ListConfig)) and node._get_parent() is not None:
        return str(node._get_full_key(None))
    return ""


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """Yield ``(parent path, path, key, value)`` for every entry of nested plain dicts and lists."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield where, _path(where, key), key, value
            yield from _walk(value, _path(where, key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield where, f"{where}[{i}]", i, value
            yield from _walk(value, f"{where}[{i}]")


def _targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(config path, _target_)`` for every target in plain data; reject what Hydra would misread."""
    for parent, path, key, value in _walk(node, where):
        if isinstance(value, str) and "${" in value:
            # Hydra turns plain data back into an OmegaConf node, where this would become a live
            # interpolation (e.g. ${oc.create:{_target_: ...}}) built after our check.
            raise ConfigError(f"config '{path}' resolves to '{value}', which holds an interpolation: "
                              "escaped interpolations may not reach a built component")
        if key == "_target_":
            if not isinstance(value, str):
                raise ConfigError(f"config '{path}' must be a dotted name (a string), not {value!r}")
            yield parent or "<root>", value
        elif key == "_args_" and not isinstance(value, (list, tuple)):
            raise ConfigError(f"config '{path}' must be a list of positional arguments, not {value!r}")


def _locate(target: str) -> Any:
    """Import ``target`` as Hydra's ``instantiate`` will (same function); None when it does not exist."""
    from hydra._internal.utils import _locate as hydra_locate

    try:
        return hydra_locate(target)
    except Exception:
        return None


@lru_cache(maxsize=1)
def components() -> tuple[str, ...]:
    """Dotted paths of the public classes and functions defined in sketchlab that configs may build."""
    import importlib
    import inspect
    import pkgutil

    import sketchlab

    found: set[str] = set()
    for info in pkgutil.walk_packages(sketchlab.__path__, prefix="sketchlab."):
        if any(_in(info.name, m) for m in EXCLUDED_MODULES) or any(p.startswith("_") for p in info.name.split(".")):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an optional dependency missing must not hide the other choices
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) == info.name:
                found.add(f"{info.name}.{name}")
    return tuple(sorted(found))


def _namespace_members(prefix: str, base: type) -> list[str]:
    """Public ``prefix.Name`` classes that subclass ``base`` (the close-match candidates for a typo)."""
    module = _locate(prefix)
    return sorted(f"{prefix}.{n}" for n, obj in vars(module).items()
                  if not n.startswith("_") and isinstance(obj, type) and issubclass(obj, base)
                  and _in(obj.__module__, prefix)) if module is not None else []


def _refuse(where: str, target: str, why: str, candidates: list[str] | tuple[str, ...] = ()) -> ConfigError:
    close = difflib.get_close_matches(target, candidates, n=5, cutoff=0.6)
    same_module = [c for c in candidates if c.rsplit(".", 1)[0] == target.rsplit(".", 1)[0]]
    choices = sorted(set(close + same_module))
    hint = ("\nValid choices include:\n  " + "\n  ".join(choices)) if choices else ""
    return ConfigError(f"config '{where}' has _target_ '{target}', {why}. Allowed: {ALLOWED}.{hint}")


def check_target(target: str, where: str = "<root>") -> None:
    """Raise ``ConfigError`` unless ``target`` names an allowed component (see the module docstring)."""
    if not _DOTTED.fullmatch(target) or any(p.startswith("_") for p in target.split(".")):
        raise _refuse(where, target, "which is not a public dotted name (no part may start with '_')")
    if _in(target, "sketchlab"):
        if target in components():
            return
        # A re-export (sketchlab.models.sketch_ode.SketchODE) is fine when what it names is a component.
        obj = None if any(_in(target, m) for m in EXCLUDED_MODULES) else _locate(target)
        canonical = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if obj is None or canonical not in components():
            raise _refuse(where, target, "which does not exist or may not be built", components())
        return
    for prefix, base_path in TORCH_NAMESPACES:
        if _in(target, prefix):
            base = _locate(base_path)
            obj = _locate(target)
            if obj is None:
                raise _refuse(where, target, "which does not exist", _namespace_members(prefix, base))
            # The located object, not the spelling, decides: torch.nn.functional.torch.fx... is refused.
            if not (isinstance(obj, type) and issubclass(obj, base) and _in(obj.__module__, prefix)):
                raise _refuse(where, target, f"which is not a {base_path} class defined under {prefix}",
                              _namespace_members(prefix, base))
            return
    raise _refuse(where, target, "which is outside the allowed namespaces")


def check_targets(cfg: Any, where: str = "") -> None:
    """Raise ``ConfigError`` if any ``_target_`` in ``cfg`` (resolved first) may not be built."""
    for path, target in _targets(_plain(cfg), where or _where(cfg)):
        check_target(target, path)


def build(cfg: Any, **kwargs: Any) -> Any:
    """Instantiate a config node (``_target_`` + kwargs) after checking its targets; extra kwargs override.

    Interpolations are resolved first (a sub-node against its root config) and exactly the checked
    data is instantiated. Plain-data kwargs are checked too; objects passed as kwargs are trusted.
    """
    if cfg is None:
        return None
    plain = _plain(cfg)
    if not isinstance(plain, dict) or "_target_" not in plain:
        raise ConfigError(f"cannot build {plain!r}: no _target_ in this config node")
    plain_kwargs = {k: _plain(v) for k, v in kwargs.items()}
    if {"_target_", "_args_"} & plain_kwargs.keys():
        raise ConfigError("build() takes the _target_ and _args_ from the config node, not from kwargs")
    for path, target in _targets(plain, _where(cfg)):
        check_target(target, path)
    for path, target in _targets(plain_kwargs, "<kwargs>"):
        check_target(target, path)
    try:
        return instantiate(plain, **plain_kwargs)
    except InstantiationException as exc:
        # instantiating plain data loses the node's place in the config: put the key back in the message
        raise InstantiationException(f"{exc}\nfull_key: {_where(cfg) or '<root>'}") from exc.__cause__


def _check_plugin(node: Any, where: str, kind: str) -> None:
    """``hydra.launcher``/``hydra.sweeper``: an installed Hydra plugin class; nested targets as usual."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    if node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(f"config '{where}' must be a {kind} config with a _target_, not {node!r}")
    base = {"launcher": Launcher, "sweeper": Sweeper}[kind]
    installed = sorted(f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(base)
                       if c.__module__.startswith(HYDRA_PLUGIN_PREFIXES))
    target = node.get("_target_")
    if target not in installed:
        close = difflib.get_close_matches(str(target), installed, n=5, cutoff=0.6)
        raise ConfigError(f"config '{where}' has _target_ '{target}': a {kind} must be an installed Hydra "
                          f"{kind} plugin class. Installed: {', '.join(installed)}"
                          + (f"\nClose matches: {', '.join(close)}" if close else ""))
    rest = {k: v for k, v in node.items() if k != "_target_"}
    for path, target in _targets(rest, where):
        check_target(target, path)


def _check_callbacks(node: Any, where: str) -> None:
    """``hydra.callbacks``: each entry a public sketchlab subclass of Hydra's ``Callback``."""
    from hydra.experimental.callback import Callback

    if node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(f"config '{where}' must map names to callback configs, not {node!r}")
    for path, target in _targets(node, where):
        check_target(target, path)
    for name, entry in node.items():
        target = entry.get("_target_") if isinstance(entry, dict) else None
        obj = _locate(target) if isinstance(target, str) else None
        if not (isinstance(obj, type) and issubclass(obj, Callback)):
            raise ConfigError(f"config '{_path(where, name)}' has _target_ '{target}', which is not a subclass of "
                              "hydra.experimental.callback.Callback: Hydra callbacks must be sketchlab "
                              "Callback classes")


def _check_logging(log_cfg: Any, where: str) -> None:
    """Logging dictConfig: ``()``/``class`` factories must be logging classes; ``ext://`` only sys streams."""
    import logging

    bases = (logging.Handler, logging.Formatter, logging.Filter)
    keys = list(log_cfg.keys()) if isinstance(log_cfg, DictConfig) else range(len(log_cfg))
    for key in keys:
        path = _path(where, key) if isinstance(log_cfg, DictConfig) else f"{where}[{key}]"
        try:
            value = log_cfg[key]
        except Exception:
            if key in ("()", "class"):  # a factory we cannot see now is one we may not allow
                raise ConfigError(f"config '{path}' does not resolve, so its logging factory cannot be checked")
            continue  # e.g. a log file name under hydra.runtime.output_dir, set only when the job starts
        if isinstance(value, (DictConfig, ListConfig)):
            _check_logging(value, path)
            continue
        if isinstance(value, str) and value.startswith("ext://") and value not in ("ext://sys.stdout",
                                                                                   "ext://sys.stderr"):
            raise ConfigError(f"config '{path}' is '{value}': logging configs may only name ext://sys.stdout "
                              "or ext://sys.stderr")
        if key in ("()", "class"):
            obj = _locate(value) if isinstance(value, str) and value.startswith(LOGGING_PREFIXES) else value
            if not (isinstance(obj, type) and issubclass(obj, bases) and obj.__module__.startswith(
                    tuple(p.rstrip(".") for p in LOGGING_PREFIXES))):
                raise ConfigError(f"config '{path}' is '{value}': logging factories must be Handler, Formatter "
                                  "or Filter classes from logging or colorlog")


def check_hydra_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` if what Hydra builds itself from ``cfg.hydra`` is not allowed.

    ``hydra.callbacks.*``: public sketchlab Callback classes; ``hydra.launcher``/``hydra.sweeper``:
    installed Hydra plugin classes (``hydra_plugins.*``, ``hydra._internal.core_plugins.*``); nested
    targets as in :func:`check_target`; ``hydra.job_logging``/``hydra.hydra_logging``: see ``_check_logging``.
    """
    hydra_cfg = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if hydra_cfg is None:
        return
    for key in ("callbacks", "launcher", "sweeper"):
        try:
            plain = _plain(hydra_cfg.get(key))
        except Exception as exc:
            raise ConfigError(f"config 'hydra.{key}' does not resolve, so it cannot be checked: {exc}") from exc
        if key == "callbacks":
            _check_callbacks(plain, "hydra.callbacks")
        else:
            _check_plugin(plain, f"hydra.{key}", key)
    for key in ("job_logging", "hydra_logging"):
        node = hydra_cfg.get(key)
        if isinstance(node, DictConfig):
            _check_logging(node, f"hydra.{key}")


def guard_hydra() -> None:
    """Make Hydra check every config it composes with :func:`check_hydra_config` (idempotent).

    Wraps ``ConfigLoaderImpl.load_configuration`` (hydra-core 1.3), through which every run, multirun,
    per-job sweep config, ``--cfg`` and ``--help`` composes, so a rejected callback, launcher, sweeper
    or logging factory fails before Hydra builds it. Call it before the ``@hydra.main`` function.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl.load_configuration
    if getattr(original, "sketchlab_guarded", False):
        return

    @functools.wraps(original)
    def load_configuration(self: Any, *args: Any, **kwargs: Any) -> DictConfig:
        cfg = original(self, *args, **kwargs)
        check_hydra_config(cfg)
        return cfg

    load_configuration.sketchlab_guarded = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
