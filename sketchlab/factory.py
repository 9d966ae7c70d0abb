"""Objects from configs: the data module of a training config, and a trained model from its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sketchlab.engine.checkpoint import load_checkpoint
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


def load_trained(checkpoint: str | Path, device: torch.device, data_dir: str | None = None) -> tuple[Any, Any, dict]:
    """Rebuild the model and data module of a checkpoint from the config stored inside it."""
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
