"""Training-time augmentations of stroke-3 sketches.

An augmentation is a callable ``aug(stroke3, rng) -> stroke3``; the rng is passed in so a run's
data order and augmentations follow from its seed (and resume exactly from a checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def random_scale(stroke3: np.ndarray, rng: np.random.Generator, factor: float) -> np.ndarray:
    """Scale x and y independently by factors uniform in ``[1 - factor, 1 + factor]`` (magenta's random_scale)."""
    sx = (rng.random() - 0.5) * 2 * factor + 1.0
    sy = (rng.random() - 0.5) * 2 * factor + 1.0
    out = np.array(stroke3, dtype=np.float32, copy=True)
    out[:, 0] *= sx
    out[:, 1] *= sy
    return out


def drop_points(stroke3: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Merge interior points of a stroke into their neighbour with probability ``prob`` (magenta's augment_strokes).

    The first three points of each stroke and every stroke end are kept, so the drawing keeps its
    strokes and end points; a dropped point's offset is added to the previous kept row.
    """
    result: list[list[float]] = []
    prev = [0.0, 0.0, 1.0]
    kept = [0.0, 0.0, 1.0]
    count = 0
    for row in np.asarray(stroke3):
        candidate = [float(row[0]), float(row[1]), float(row[2])]
        count = 0 if (candidate[2] == 1 or prev[2] == 1) else count + 1
        if candidate[2] == 0 and prev[2] == 0 and count > 2 and rng.random() < prob:
            kept[0] += candidate[0]
            kept[1] += candidate[1]
        else:
            kept = candidate
            prev = kept
            result.append(kept)
    return np.asarray(result, dtype=np.float32).reshape(-1, 3)


class SketchRNNAugment:
    """Sketch-RNN's training augmentation: random scaling, then random point dropping."""

    def __init__(self, random_scale_factor: float = 0.15, augment_stroke_prob: float = 0.10) -> None:
        if random_scale_factor < 0 or not 0 <= augment_stroke_prob <= 1:
            raise ValueError(f"random_scale_factor must be >= 0 and augment_stroke_prob in [0, 1], "
                             f"got {random_scale_factor}, {augment_stroke_prob}")
        self.random_scale_factor = random_scale_factor
        self.augment_stroke_prob = augment_stroke_prob

    def __call__(self, stroke3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = random_scale(stroke3, rng, self.random_scale_factor)
        if self.augment_stroke_prob > 0:
            out = drop_points(out, rng, self.augment_stroke_prob)
        return out


class Compose:
    """Apply several augmentations in order."""

    def __init__(self, transforms: Sequence[Augment]) -> None:
        self.transforms = list(transforms)

    def __call__(self, stroke3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for transform in self.transforms:
            stroke3 = transform(stroke3, rng)
        return stroke3
