"""Where data lives: the data root configs read from and the download cache."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    """``$SKETCHLAB_DATA``, else ``../shared/data`` beside the checkout when present, else the download cache."""
    env = os.environ.get("SKETCHLAB_DATA")
    if env:
        return Path(env).expanduser()
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    if shared.is_dir():
        return shared
    return cache_root() / "data"


def cache_root() -> Path:
    """Where downloads are cached: ``$SKETCHLAB_CACHE`` or ``~/.cache/sketchlab``."""
    return Path(os.environ.get("SKETCHLAB_CACHE", Path.home() / ".cache" / "sketchlab")).expanduser()
