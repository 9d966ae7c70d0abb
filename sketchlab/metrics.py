"""Geometry scores of drawings that mean the same for every model: Chamfer distance along the drawn strokes."""

from __future__ import annotations

import numpy as np

from sketchlab.data.strokes import bounds, to_polylines


def resample_along_arc(stroke3: np.ndarray, n: int = 64) -> np.ndarray:
    """``n`` (x, y) points spaced evenly along the drawn (pen-down) strokes of a stroke-3 sketch, as an (n, 2) array.

    The strokes are walked one after another; the pen-up jumps between them add no length, so points only ever
    lie on what was drawn. A drawing of isolated dots gives its dots; an empty one, the pen resting at the origin.
    """
    lines = [line for line in to_polylines(stroke3) if len(line)]
    if not lines:
        return np.zeros((n, 2))
    segments = [np.column_stack([line[:-1], line[1:]]) for line in lines if len(line) > 1]
    if not segments:  # only isolated points
        pts = np.concatenate(lines)
        return pts[np.linspace(0, len(pts) - 1, n).round().astype(int)]
    seg = np.concatenate(segments)
    length = np.linalg.norm(seg[:, 2:] - seg[:, :2], axis=1)
    cum = np.concatenate([[0.0], np.cumsum(length)])
    if cum[-1] <= 0:
        return np.repeat(seg[:1, :2], n, axis=0)
    at = np.linspace(0, cum[-1], n)
    idx = np.clip(np.searchsorted(cum, at, side="right") - 1, 0, len(seg) - 1)
    frac = np.where(length[idx] > 0, (at - cum[idx]) / np.maximum(length[idx], 1e-12), 0.0)[:, None]
    return seg[idx, :2] + frac * (seg[idx, 2:] - seg[idx, :2])


def point_distance(a: np.ndarray, b: np.ndarray, n: int = 64) -> float:
    """Mean distance between corresponding points of two sketches after resampling both to ``n`` points."""
    return float(np.linalg.norm(resample_along_arc(a, n) - resample_along_arc(b, n), axis=1).mean())


def chamfer_distance(original: np.ndarray, other: np.ndarray, n_points: int = 64) -> float:
    """Symmetric Chamfer distance between two stroke-3 sketches, in units of ``original``'s bounding-box diagonal.

    Both are resampled evenly along their drawn strokes (:func:`resample_along_arc`); the score is the mean
    of the two directed mean nearest-point distances. It is 0 for identical drawings, does not depend on the
    sketches' scale, and means the same for every model. Absolute positions count: both sketches start at
    the origin, as stroke-3 drawings do.
    """
    a, b = resample_along_arc(original, n_points), resample_along_arc(other, n_points)
    x0, x1, y0, y1 = bounds(original)
    diag = float(np.hypot(x1 - x0, y1 - y0)) or 1.0
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float((d.min(axis=1).mean() + d.min(axis=0).mean()) / 2 / diag)
