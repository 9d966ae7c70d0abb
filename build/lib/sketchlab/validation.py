"""Typed checks for config values, with errors that name the config key.

Components are built from config nodes by :func:`sketchlab.registry.build`, so a constructor does not
know where its node sits in the config; each one passes the key users write on the command line
(``trainer.max_steps``), which is where the class is configured in ``conf/``. Every check returns the
value converted to its type, so ``max_steps = check_int(max_steps, "trainer.max_steps", min=0)``
both validates and normalises (``1e3`` → ``1000``, ``"7"`` from ``${oc.env:...}`` → ``7``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class ConfigValueError(ValueError):
    """A config value has the wrong type or lies out of range; the message names its config key.

    (Not to be confused with ``omegaconf.errors.ConfigValueError``, which OmegaConf raises for its own
    type conversions.)
    """


def _got(value: Any) -> str:
    return f"got {value!r}"


def _bounds(min: float | None, max: float | None, above: float | None = None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above}")
    if min is not None:
        parts.append(f">= {min}")
    if max is not None:
        parts.append(f"<= {max}")
    return " and ".join(parts)


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is one exactly (bools, 1.5 and 'abc' are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # Hydra reads 1e3 as a float
        return int(value)
    if isinstance(value, str):  # ${oc.env:...} always yields strings
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_int(value: Any, key: str, *, min: int | None = None, max: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` as an int within ``[min, max]``; ``None`` passes only when ``optional``."""
    if value is None and optional:
        return None
    number = _as_int(value)
    if number is None or (min is not None and number < min) or (max is not None and number > max):
        bounds = _bounds(min, max)
        what = "an integer" + (f" {bounds}" if bounds else "") + (" or null" if optional else "")
        raise ConfigValueError(f"{key} must be {what}, {_got(value)}")
    return number


def check_float(value: Any, key: str, *, min: float | None = None, max: float | None = None,
                above: float | None = None, optional: bool = False) -> float | None:
    """``value`` as a finite float within ``[min, max]`` (and ``> above``); ``None`` only when ``optional``."""
    if value is None and optional:
        return None
    number = _as_float(value)
    if (number is None or not math.isfinite(number) or (min is not None and number < min)
            or (max is not None and number > max) or (above is not None and number <= above)):
        bounds = _bounds(min, max, above)
        what = "a number" + (f" {bounds}" if bounds else "") + (" or null" if optional else "")
        raise ConfigValueError(f"{key} must be {what}, {_got(value)}")
    return number


def check_bool(value: Any, key: str) -> bool:
    """``value`` as a bool: true/false only (a stray string such as 'no' is truthy in Python)."""
    if isinstance(value, bool):
        return value
    raise ConfigValueError(f"{key} must be true or false, {_got(value)}")


def _choices(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def check_choice(value: Any, key: str, choices: Sequence[str]) -> str:
    """``value`` as one of ``choices`` (compared as strings, so ``precision=32`` matches ``"32"``)."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text not in choices:
        raise ConfigValueError(f"{key} must be one of {_choices(choices)}, {_got(value)}")
    return text


def check_subset(values: Any, key: str, choices: Sequence[str], *, non_empty: bool = True) -> list[str]:
    """``values`` as a list whose items are all in ``choices`` (a single string counts as a list of one)."""
    items = [values] if isinstance(values, str) else values
    try:
        items = list(items)
    except TypeError:
        items = None
    if items is None or (non_empty and not items) or any(not isinstance(v, str) or v not in choices for v in items):
        shown = values if items is None or isinstance(values, str) else items
        raise ConfigValueError(f"{key} must be a{' non-empty' if non_empty else ''} list of items from "
                               f"{_choices(choices)}, {_got(shown)}")
    return items


def check_device(value: Any, key: str) -> str:
    """``auto`` or a torch device string (``cpu``, ``cuda``, ``cuda:1``) that exists on this machine."""
    import torch

    if value == "auto":
        return "auto"
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ConfigValueError(f"{key} must be auto, cpu, cuda or cuda:<index>, {_got(value)}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigValueError(f"{key}={value} but CUDA is not available on this machine; use {key}=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigValueError(f"{key}={value} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(value)
