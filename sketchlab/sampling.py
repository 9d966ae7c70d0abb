"""What a trained model draws: samples, reconstructions, interpolations, their grids and metrics.

Works for any :class:`~sketchlab.models.base.SketchModel`; used by ``sketchlab-sample`` and, during
training, to log rendered grids to MLflow at each validation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sketchlab.engine.evaluation import loss_sums, to_device
from sketchlab.metrics import point_distance
from sketchlab.models.base import SketchModel
from sketchlab.models.latent import latent_path

log = logging.getLogger(__name__)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def spread(sketches: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    """``n`` sketches evenly spaced through a split (splits are often sorted by class, so not the first ``n``)."""
    if n <= 0 or not sketches:
        return []
    index = np.unique(np.linspace(0, len(sketches) - 1, min(n, len(sketches))).round().astype(int))
    return [sketches[i] for i in index]


def _batch(data: Any, sketches: Sequence[np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return to_device(data.collate(list(sketches)), device)


@torch.no_grad()
def reconstruct(model: SketchModel, data: Any, sketches: Sequence[np.ndarray], temperature: float = 0.4,
                **decode_kw: Any) -> list[np.ndarray]:
    """Encode ``sketches`` (prepared stroke-3 arrays) and decode them again."""
    model.eval()
    return model.reconstruct(_batch(data, sketches, _device(model)), temperature=temperature, **decode_kw)


@torch.no_grad()
def sample(model: SketchModel, n: int, temperature: float = 0.4, data: Any = None, split: str = "valid",
           sigma: float = 0.1, **decode_kw: Any) -> list[np.ndarray]:
    """``n`` samples: from the prior (z ~ N(0, I), or no z for an unconditional model) where the model has
    one, else as the original SketchODE does, around real sketches: their codes plus N(0, sigma^2) noise."""
    model.eval()
    if model.has_prior:
        return model.sample(n, temperature=temperature, **decode_kw)
    if data is None:
        raise ValueError(f"{type(model).__name__} has no prior to sample from (it is not a VAE): sampling it needs "
                         "data, whose sketches' codes are jittered")
    return reconstruct(model, data, spread(data.sketches(split), n), temperature, sigma=sigma, **decode_kw)


@torch.no_grad()
def interpolate(model: SketchModel, data: Any, pairs: Sequence[tuple[np.ndarray, np.ndarray]], steps: int = 8,
                temperature: float = 0.4, method: str = "slerp", **decode_kw: Any) -> list[list[np.ndarray]]:
    """For each (sketch_a, sketch_b), the decoded sketches along the latent path between their codes."""
    model.eval()
    if not model.conditional:
        raise ValueError("interpolation needs a conditional model (one with an encoder)")
    device = _device(model)
    rows = []
    for a, b in pairs:
        z = model.encode(_batch(data, [a, b], device))
        rows.append(model.decode(latent_path(z[0], z[1], steps, method), temperature=temperature, **decode_kw))
    return rows


@torch.no_grad()
def split_metrics(model: SketchModel, data: Any, split: str = "valid", max_batches: int | None = None,
                  n_distance: int = 0, temperature: float = 0.01) -> dict[str, float]:
    """Loss terms averaged over a split (eval mode), plus the mean point distance of reconstructions
    for the first ``n_distance`` sketches (``point_distance``, in the data's normalised units)."""
    model.eval()
    sums, count = loss_sums(model, data.eval_batches(split, max_batches), _device(model))
    metrics = {k: v / max(count, 1) for k, v in sums.items()}
    if n_distance and model.conditional:
        originals = data.sketches(split)[:n_distance]
        recons = []
        for start in range(0, len(originals), data.eval_batch_size):
            recons += reconstruct(model, data, originals[start:start + data.eval_batch_size], temperature)
        metrics["point_distance"] = float(np.mean([point_distance(o, r) for o, r in zip(originals, recons)]))
    return metrics


def visual_grids(model: SketchModel, data: Any, n: int = 8, temperature: float = 0.4,
                 split: str = "valid") -> dict[str, Any]:
    """PNG grids (PIL images): ``reconstructions`` (original | reconstruction rows) and ``samples``."""
    from sketchlab.render import pair_rows, render_png

    images: dict[str, Any] = {}
    if model.conditional:
        originals = spread(data.sketches(split), n)
        cells, cols = pair_rows(originals, reconstruct(model, data, originals, temperature), pairs_per_row=2)
        images["reconstructions"] = render_png(cells, cols=cols, cell_size=96)
    images["samples"] = render_png(sample(model, n, temperature, data=data, split=split), cols=min(n, 8), cell_size=96)
    return images


def visualize_callback(data: Any, logger: Any, n: int = 8, temperature: float = 0.4
                       ) -> Callable[[SketchModel, int], None]:
    """A training callback logging :func:`visual_grids` to ``logger`` (a failure to draw never stops training)."""

    def callback(model: SketchModel, step: int) -> None:
        try:
            for key, image in visual_grids(model, data, n, temperature).items():
                logger.log_image(image, key, step)
        except Exception as exc:  # rendering is a diagnostic: log and carry on training
            log.warning("could not render sketches at step %d: %s", step, exc)

    return callback
