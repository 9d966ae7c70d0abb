"""``sketchlab-export``: a trained model as a sketch-rnn-js JSON (browser, ml5.js) or an MLflow pyfunc model.

- ``format=sketch_rnn_js``: the JSON that magenta's sketch-rnn-js, magenta-js (``@magenta/sketch``) and
  ml5.js load (see :mod:`sketchlab.models.sketch_rnn.js_format`). Sketch-RNN with LSTM cells and 20
  mixture components only; anything else is refused with the setting to change. Decoder-only models
  load everywhere; conditional (VAE) models load in sketch-rnn-js only (magenta-js reads just the decoder).
- ``format=mlflow``: a pyfunc model folder that ``mlflow models serve`` serves (see
  :mod:`sketchlab.tracking.serving`); several checkpoints give one model with a class per checkpoint.

``checkpoint=`` takes a ``.pt`` file, a training run directory or a sketch-rnn-js ``.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig

from sketchlab.cli.errors import entry_point, hydra_task
from sketchlab.cli.sample import WHICH, checkpoint_file
from sketchlab.config import config_dir
from sketchlab.factory import is_js_model, load_model
from sketchlab.registry import guard_hydra
from sketchlab.validation import ConfigValueError, check_bool, check_choice, check_float, check_int

log = logging.getLogger("sketchlab.export")

FORMATS = ("sketch_rnn_js", "mlflow")


def _checkpoints(cfg: DictConfig) -> list[str]:
    value = cfg.checkpoint
    items = [str(v) for v in value] if isinstance(value, (list, ListConfig)) else ([str(value)] if value else [])
    if not items:
        raise ConfigValueError("say what to export: checkpoint=<.pt file, run dir or sketch-rnn-js .json>")
    if len(items) > 1 and cfg.format != "mlflow":
        raise ConfigValueError(f"format={cfg.format} exports one model; a list of checkpoints is for format=mlflow")
    return items


def check_export_config(cfg: DictConfig) -> None:
    """Reject bad values of conf/export.yaml before anything loads, naming the key."""
    check_choice(cfg.format, "format", FORMATS)
    check_choice(cfg.which, "which", WHICH)
    _checkpoints(cfg)
    check_float(cfg.scale_factor, "scale_factor", above=0, optional=True)
    check_int(cfg.max_seq_len, "max_seq_len", min=1, optional=True)
    check_bool(cfg.clip, "clip")
    if cfg.format != "sketch_rnn_js":
        for key in ("name", "scale_factor", "max_seq_len"):
            if cfg.get(key) is not None:
                raise ConfigValueError(f"{key}= sets the sketch-rnn-js header; format={cfg.format} has none")
    if cfg.classes is not None and cfg.format != "mlflow":
        raise ConfigValueError("classes= names the models of format=mlflow")


def _source(checkpoint: str, which: str) -> Path:
    return Path(checkpoint).expanduser() if is_js_model(checkpoint) else checkpoint_file(checkpoint, which)


def export_js_file(cfg: DictConfig) -> Path:
    """``format=sketch_rnn_js``: write the JSON; returns its path."""
    from sketchlab.models.sketch_rnn.js_format import export_js, write_js_model

    loaded = load_model(_source(_checkpoints(cfg)[0], cfg.which))
    out = Path(cfg.out)
    if out.suffix.lower() != ".json":
        raise ConfigValueError(f"out={cfg.out}: a sketch-rnn-js model is a .json file")
    scale = float(cfg.scale_factor) if cfg.scale_factor is not None else loaded.data_scale
    blob = export_js(loaded.model, name=str(cfg.name or loaded.name), scale_factor=scale,
                     max_seq_len=cfg.max_seq_len, clip=bool(cfg.clip))
    write_js_model(blob, out)
    info = blob[0]
    log.info("wrote %s: %s, %d weight arrays, max_seq_len %d, scale_factor %.4g", out,
             "decoder-only (mode 2)" if info["mode"] == 2 else "VAE (mode 0)", len(blob[1]), info["max_seq_len"],
             info["scale_factor"])
    if info["mode"] != 2:
        log.warning("a conditional (VAE) model: sketch-rnn-js loads it; magenta-js / ml5.js load decoder-only "
                    "models only (train with model.net.conditional=false for those)")
    return out


def export_mlflow(cfg: DictConfig) -> Path:
    """``format=mlflow``: save a pyfunc model folder; returns it."""
    from sketchlab.tracking.serving import ServedModel, save_pyfunc

    sources = _checkpoints(cfg)
    if Path(cfg.out).exists():
        raise ConfigValueError(f"out={cfg.out} already exists: MLflow writes a model into a new folder")
    classes = [str(c) for c in cfg.classes] if cfg.classes is not None else None
    if classes is not None and len(classes) != len(sources):
        raise ConfigValueError(f"classes= names {len(classes)} models but checkpoint= gives {len(sources)}")
    served = []
    for i, source in enumerate(sources):
        loaded = load_model(_source(source, cfg.which))
        served.append(ServedModel(classes[i] if classes else loaded.name, loaded.net, loaded.model, loaded.data_scale))
    path = save_pyfunc(served, cfg.out)
    log.info("wrote MLflow model %s (classes: %s); serve it with: mlflow models serve -m %s --env-manager local",
             path, ", ".join(m.name for m in served), path)
    return path


def run_export(cfg: DictConfig) -> Path:
    """Export as ``cfg`` says; returns the written file or folder."""
    check_export_config(cfg)
    return export_js_file(cfg) if cfg.format == "sketch_rnn_js" else export_mlflow(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@hydra_task
def _hydra_main(cfg: DictConfig) -> Any:
    run_export(cfg)


@entry_point
def main() -> None:
    """Console entry point (``sketchlab-export``): user errors end in one ``error:`` line, exit status 2."""
    guard_hydra()
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
