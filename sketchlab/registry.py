"""Turns config nodes into objects, accepting only sketchlab and torch components.

Hydra's ``instantiate`` would import and call any dotted path a config names; a typo or a hostile
config would then fail deep inside ``importlib`` (or run arbitrary code). ``build`` checks every
``_target_`` of a node first and, for an unknown one, lists the components that do exist.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

ALLOWED_PREFIXES = ("sketchlab.", "torch.")


class ConfigError(ValueError):
    """A config names something that cannot be built."""


def _targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(config path, _target_)`` for every target in a nested config."""
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield where or "<root>", str(value)
            else:
                yield from _targets(value, path)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}[{i}]")


def _locate(target: str) -> Any:
    """Import ``target`` (``pkg.module.Name`` or ``pkg.module.Class.method``); None when it doesn't exist."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


@lru_cache(maxsize=1)
def components() -> tuple[str, ...]:
    """Dotted paths of the public classes and functions defined in sketchlab (what configs may name)."""
    import sketchlab

    found: set[str] = set()
    for info in pkgutil.walk_packages(sketchlab.__path__, prefix="sketchlab."):
        if ".cli" in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an optional dependency missing must not hide the other choices
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != info.name:
                continue
            found.add(f"{info.name}.{name}")
    return tuple(sorted(found))


def check_targets(cfg: Any) -> None:
    """Raise ``ConfigError`` if any ``_target_`` in ``cfg`` is outside sketchlab/torch or does not exist."""
    for where, target in _targets(cfg):
        if not target.startswith(ALLOWED_PREFIXES):
            raise ConfigError(
                f"config '{where}' has _target_ '{target}': only components under "
                f"{', '.join(p.rstrip('.') for p in ALLOWED_PREFIXES)} may be built"
            )
        if _locate(target) is None:
            known = [c for c in components() if c.rsplit(".", 1)[0] == target.rsplit(".", 1)[0]]
            close = difflib.get_close_matches(target, components(), n=5, cutoff=0.6)
            choices = sorted(set(close + known)) or list(components())
            raise ConfigError(
                f"config '{where}' has _target_ '{target}', which does not exist. "
                f"Valid choices include:\n  " + "\n  ".join(choices)
            )


def build(cfg: Any, **kwargs: Any) -> Any:
    """Instantiate a config node (``_target_`` + kwargs) after checking its targets; extra kwargs override."""
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    if not isinstance(cfg, DictConfig) or "_target_" not in cfg:
        raise ConfigError(f"cannot build {OmegaConf.to_yaml(cfg) if isinstance(cfg, DictConfig) else cfg!r}: "
                          "no _target_ in this config node")
    check_targets(cfg)
    return instantiate(cfg, **kwargs)
