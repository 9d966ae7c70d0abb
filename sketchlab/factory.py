"""Objects from configs: the data module of a training config, and a trained model from its checkpoint
(or from a sketch-rnn-js ``.json`` model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sketchlab.engine.checkpoint import load_checkpoint
from sketchlab.models.sketch_rnn.js_format import read_js_model
from sketchlab.registry import build


def build_data(cfg: DictConfig, rank: int = 0, world_size: int = 1) -> Any:
    """The set-up data module of ``cfg`` with the model's collate and the chosen augmentation.

    ``data.max_seq_len=auto`` is replaced in ``cfg`` by the longest sketch of the data, so the collate,
    the model and the recorded config all see that number.
    """
    augment = build(cfg.augment) if cfg.get("augment") else None
    if str(cfg.data.get("max_seq_len")) != "auto":
        collate = build(cfg.model.collate)
        return build(cfg.data, augment=augment, collate=collate, seed=int(cfg.seed), rank=rank,
                     world_size=world_size).setup()
    data = build(cfg.data, augment=augment, collate=None, seed=int(cfg.seed), rank=rank, world_size=world_size).setup()
    OmegaConf.update(cfg, "data.max_seq_len", data.max_seq_len)
    data.collate = build(cfg.model.collate)
    return data


def is_js_model(path: str | Path) -> bool:
    """Whether ``path`` names a sketch-rnn-js model (a ``.json`` file) rather than a checkpoint or run dir."""
    return Path(path).suffix.lower() == ".json"


@dataclass
class LoadedModel:
    """A trained model without its data: what export and serving need."""

    model: Any
    net: dict[str, Any]          # the resolved model.net config that rebuilds it
    name: str                    # the data's name (a sketch-rnn-js file: its info.name)
    data_scale: float            # data units per model unit
    step: int
    config: DictConfig | None    # the training config (None for a sketch-rnn-js file)
    info: dict[str, Any] = field(default_factory=dict)  # a sketch-rnn-js file's header


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """The model of a checkpoint, run directory or sketch-rnn-js ``.json``, in eval mode on ``device``."""
    if is_js_model(checkpoint):
        js = read_js_model(checkpoint)
        return LoadedModel(js.build().to(device), js.net, str(js.info.get("name") or Path(checkpoint).stem),
                           js.scale_factor, 0, None, js.info)
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "config" not in state:
        raise ValueError(f"{checkpoint} holds no training config; was it written by sketchlab-train?")
    cfg = OmegaConf.create(state["config"])
    model = build(cfg.model.net)
    model.load_state_dict(state["model"])
    net = OmegaConf.to_container(cfg, resolve=True)["model"]["net"]
    return LoadedModel(model.to(device).eval(), net, str(cfg.data.get("name", "sketch")),
                       float(state.get("data_scale", 1.0)), int(state["step"]), cfg)


def load_trained(checkpoint: str | Path, device: torch.device, data_dir: str | None = None) -> tuple[Any, Any, dict]:
    """Rebuild the model and data module of a checkpoint from the config stored inside it.

    A sketch-rnn-js ``.json`` model has no data: the data module is None.
    """
    if is_js_model(checkpoint):
        loaded = load_model(checkpoint, device)
        return loaded.model, None, {"config": None, "step": 0, "mlflow_run_id": None, "js_info": loaded.info}
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "config" not in state:
        raise ValueError(f"{checkpoint} holds no training config; was it written by sketchlab-train?")
    cfg = OmegaConf.create(state["config"])
    if data_dir is not None and "path" in cfg.data.source:
        old_root = str(cfg.paths.data_dir)
        cfg.data.source.path = str(cfg.data.source.path).replace(old_root, str(data_dir), 1)
    model = build(cfg.model.net)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    data = build_data(cfg).setup()
    return model, data, {"config": cfg, "step": int(state["step"]), "mlflow_run_id": state.get("mlflow_run_id")}
