"""Where the configs live and the OmegaConf resolvers they use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from sketchlab.data.paths import default_data_root


def config_dir() -> Path:
    """The ``conf/`` folder: ``$SKETCHLAB_CONF`` or the one at the top of the checkout."""
    env = os.environ.get("SKETCHLAB_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "conf"
    if not path.is_dir():
        raise FileNotFoundError(f"config folder not found at {path}; set SKETCHLAB_CONF to the repo's conf/ folder")
    return path


def register_resolvers() -> None:
    """``${sketchlab_data:}`` → the data root (see :func:`sketchlab.data.paths.default_data_root`)."""
    if not OmegaConf.has_resolver("sketchlab_data"):
        OmegaConf.register_new_resolver("sketchlab_data", lambda: str(default_data_root()))


register_resolvers()
