"""Where the configs live and the OmegaConf resolvers they use.

The configs that ship with sketchlab are package data (``sketchlab/conf``), so any install, editable or
not, finds them. A ``conf/`` folder in the directory you run from (or ``$SKETCHLAB_USER_CONF``) is on
Hydra's search path after them: put your own experiments and data configs there.
"""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from sketchlab.data.paths import default_data_root


def config_dir() -> Path:
    """The package's config folder (``$SKETCHLAB_CONF`` replaces it, e.g. for a customised copy)."""
    env = os.environ.get("SKETCHLAB_CONF")
    path = Path(env) if env else Path(str(resources.files("sketchlab") / "conf"))
    if not path.is_dir():
        raise FileNotFoundError(f"config folder not found at {path}; reinstall sketchlab or unset SKETCHLAB_CONF")
    return path


def register_resolvers() -> None:
    """``${sketchlab_data:}`` → the data root (see :func:`sketchlab.data.paths.default_data_root`)."""
    if not OmegaConf.has_resolver("sketchlab_data"):
        OmegaConf.register_new_resolver("sketchlab_data", lambda: str(default_data_root()))


register_resolvers()
# the user's conf/ folder is optional: Hydra's warning that it is missing would greet every run without one
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=conf is not available")
