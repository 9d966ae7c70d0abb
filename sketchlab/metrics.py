"""Geometry scores of drawings that mean the same for every model: Chamfer distance along the drawn strokes."""

from __future__ import annotations

import numpy as np

from sketchlab.data.strokes import bounds, to_polylines


def resample_along_arc(stroke3: np.ndarray, n_points: int = 64) -> np.ndarray:
    """``n_points`` (x, y) points spaced evenly along the drawn (pen-down) path of a stroke-3 sketch.

    The strokes are walked one after another; the pen-up jumps between them add no length, so points
    only ever lie on what was drawn. A sketch that never moves gives its points as they are.
    """
    lines = [np.asarray(line, dtype=np.float64) for line in to_polylines(stroke3) if len(line)]
    if not lines:
        return np.zeros((0, 2))
    points = np.concatenate(lines)
    steps = [np.r_[0.0, np.linalg.norm(np.diff(line, axis=0), axis=1)] for line in lines]
    arc = np.cumsum(np.concatenate(steps))
    if arc[-1] <= 0:
        return points
    at = np.linspace(0.0, arc[-1], n_points)
    # where strokes meet, arc repeats; searchsorted picks one side, which is a point of the drawing either way
    idx = np.clip(np.searchsorted(arc, at, side="right"), 1, len(arc) - 1)
    lo, hi = arc[idx - 1], arc[idx]
    w = np.where(hi > lo, (at - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)[:, None]
    return points[idx - 1] * (1 - w) + points[idx] * w


def chamfer_distance(original: np.ndarray, other: np.ndarray, n_points: int = 64) -> float:
    """Symmetric Chamfer distance between two stroke-3 sketches, in units of ``original``'s bounding-box diagonal.

    Both are resampled evenly along their drawn strokes (:func:`resample_along_arc`); the score is the mean
    of the two directed mean nearest-point distances. It is 0 for identical drawings, does not depend on the
    sketches' scale, and means the same for every model. Absolute positions count: both sketches start at
    the origin, as stroke-3 drawings do.
    """
    a, b = resample_along_arc(original, n_points), resample_along_arc(other, n_points)
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    x0, x1, y0, y1 = bounds(original)
    diag = float(np.hypot(x1 - x0, y1 - y0)) or 1.0
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float((d.min(axis=1).mean() + d.min(axis=0).mean()) / 2 / diag)
