"""Checkpoints: everything needed to continue a run exactly, written so a crash never corrupts one.

Checkpoints are read with ``torch.load(weights_only=True)``: a file can only hold tensors and plain
python values, so loading one never runs code. Everything we store (RNG states included) is kept in
that form.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sketchlab.fileio import atomic_open

FORMAT_VERSION = 2


def rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (and CUDA when present), as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; temporary files of a killed earlier write are removed."""
    with atomic_open(path, "wb", clean_stale=True) as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)
    return Path(path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the ``checkpoints/last.pt`` of a run directory."""
    path = Path(path).expanduser()
    for candidate in (path, path / "last.pt", path / "checkpoints" / "last.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint at {path} (looked for the file itself, last.pt and checkpoints/last.pt)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, never running code from the file."""
    path = resolve_checkpoint(path)
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is truncated or foreign
        raise ValueError(f"cannot read checkpoint {path}: not a file written by torch.save (truncated or foreign)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load checkpoint {path}: it holds objects a sketchlab checkpoint never contains, so "
            "loading it could run code. It is not a sketchlab checkpoint, or one written before checkpoint "
            "format 2 (which stored numpy RNG states as pickled objects): train again with this version. "
            f"Detail: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a sketchlab checkpoint (no model/step entries)")
    return state
