"""Averaging a model's loss terms over batches: validation, split metrics, sampling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

from sketchlab.models.base import SketchModel


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor moved to ``device``."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def loss_sums(model: SketchModel, batches: Iterable[dict[str, Any]], device: torch.device, step: int = 0,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
              ) -> tuple[dict[str, float], int]:
    """Sum of each loss entry weighted by batch size, and the number of sketches, over ``batches``."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        batch = to_device(batch, device)
        n = len(next(iter(batch.values())))
        with autocast():
            out = model.loss(batch, step)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach().float()) * n
        count += n
    return sums, count
