"""Run names that say what differs: a sweep's children by their swept keys, single runs by model and data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

SWEPT_KEYS_FILE = "swept_keys.json"


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """The keys a multirun's command line sweeps over (``a=1,2``, ``range(...)``, ``choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """``model.net.dec_model`` → ``dec_model``; more of the path only where the last parts would clash."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            short = ".".join(parts[-n:])
            if sum(1 for k in keys if k.split(".")[-n:] == parts[-n:]) == 1:
                break
        out[key] = short
    return out


def child_run_name(job_overrides: Sequence[str], swept: Sequence[str], short: bool = False) -> str | None:
    """``dec_model=hyper,lr=0.0003`` from a job's overrides; None when no swept key is among them.

    ``short``: decimal values to 3 significant digits (a search's sampled floats have 17).
    """
    names = short_names(list(swept))
    parts = []
    for override in job_overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in names:
            parts.append(f"{names[key]}={_short_number(value) if short else value}")
    return ",".join(parts) or None


def trial_run_name(number: int, job_overrides: Sequence[str], swept: Sequence[str]) -> str:
    """``#3 dec_model=hyper,lr=0.00316``: a search trial's number and its sampled values."""
    values = child_run_name(job_overrides, swept, short=True)
    return f"#{number} {values}" if values else f"#{number}"


def _short_number(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}" if any(c in value for c in ".eE") else value


def single_run_name(model: str, data: str, out_dir: Path) -> str:
    """``sketch_rnn-sheep-200502``: model, data and the run folder's time of day."""
    stamp = "".join(out_dir.name.split("-")[:3])
    return f"{model}-{data}-{stamp}" if stamp.isdigit() else f"{model}-{data}"


def write_swept_keys(sweep_dir: str | Path, keys: Sequence[str]) -> None:
    from sketchlab.fileio import atomic_open

    with atomic_open(Path(sweep_dir) / SWEPT_KEYS_FILE, "w") as f:
        json.dump(list(keys), f)


def read_swept_keys(sweep_dir: str | Path | None) -> list[str]:
    marker = Path(sweep_dir) / SWEPT_KEYS_FILE if sweep_dir else None
    return json.loads(marker.read_text()) if marker is not None and marker.is_file() else []
