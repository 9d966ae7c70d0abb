"""SketchODE's strokewise representation: a sketch as a sequence of strokes, each its own short curve ``[x(t), y(t)]``.

Following the original's ``Strokewise`` representation (``data/batching.py``, ``data/sketch.py``): the sketch
is moved so that its first point is the origin and scaled into the unit disc (as :mod:`sketchlab.data.curves`),
and every stroke is resampled on its own to ``n_points`` samples at times uniform in ``[0, t_max]``. Strokes
carry no pen channel (the pen is down along a stroke; where one stroke ends and the next begins is the
model's business) and keep their absolute positions, so a stroke may start anywhere.

Resampling:

- ``resample="arclength"`` (default): samples uniform in arc length along the stroke, linear between the data's
  points, as :func:`sketchlab.data.curves.stroke3_to_curve` does for the one-curve model;
- ``resample="index"``: the original's ``Stroke.resample``, a natural cubic spline through the stroke's
  points on point-index knots, evaluated at ``n_points`` index times uniform from the first to the last point.

Strokes of a single distinct point (dots) stay, as ``n_points`` copies of that point; the original dropped
strokes of one point.

A batch pads every sketch to the batch's largest stroke count: ``strokes`` (B, S, G, 2), ``stroke_mask``
(B, S) (1 for a real stroke), ``n_strokes`` (B,), the stroke time grid ``times`` (G,) and each sketch's unit-disc
radius ``scale`` (B,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from sketchlab.data.curves import _drop_repeats, sketch_radius
from sketchlab.data.strokes import from_polylines, to_polylines

RESAMPLING = ("arclength", "index")


def resample_stroke(line: np.ndarray, n_points: int, resample: str = "arclength") -> np.ndarray:
    """One polyline (K, 2) as ``n_points`` samples (n_points, 2): uniform in arc length or in point index."""
    if resample not in RESAMPLING:
        raise ValueError(f"unknown resampling '{resample}'; choose one of {', '.join(RESAMPLING)}")
    line = np.asarray(line, dtype=np.float64).reshape(-1, 2)
    if len(line) == 0:
        raise ValueError("cannot resample an empty stroke")
    distinct = _drop_repeats(line)
    if len(distinct) < 2:  # a dot
        return np.repeat(distinct[:1], n_points, axis=0)
    if resample == "index":
        knots = np.arange(len(line), dtype=np.float64)
        return CubicSpline(knots, line, bc_type="natural")(np.linspace(0.0, len(line) - 1, n_points))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(distinct, axis=0), axis=1))])
    query = np.linspace(0.0, arc[-1], n_points)
    return np.column_stack([np.interp(query, arc, distinct[:, 0]), np.interp(query, arc, distinct[:, 1])])


def stroke3_to_strokes(stroke3: np.ndarray, n_points: int = 100, resample: str = "arclength") -> tuple[np.ndarray, float]:
    """A stroke-3 sketch as (n_strokes, n_points, 2) float32 resampled strokes in the unit disc around its first
    point, and the disc's radius in the data's units."""
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    stroke3 = np.asarray(stroke3, dtype=np.float64)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"expected a stroke-3 array of shape (N, 3), got {stroke3.shape}")
    if not np.isfinite(stroke3).all():
        raise ValueError("the sketch has non-finite coordinates")
    lines = to_polylines(stroke3)
    if not lines:
        raise ValueError("cannot turn an empty sketch into strokes")
    origin = lines[0][0].copy()
    scale = sketch_radius(np.concatenate(lines))
    strokes = np.stack([resample_stroke((line - origin) / scale, n_points, resample) for line in lines])
    return strokes.astype(np.float32), scale


def strokes_to_stroke3(strokes: Sequence[np.ndarray], scale: float = 1.0) -> np.ndarray:
    """Absolute strokes (each (G, 2)) back to a stroke-3 sketch, coordinates multiplied by ``scale``."""
    return from_polylines([np.asarray(s, dtype=np.float64) * scale for s in strokes])


class StrokewiseCollate:
    """Stroke-3 sketches to strokewise SketchODE batches (see the module doc for the layout)."""

    def __init__(self, n_points: int = 100, t_max: float = 5.0, resample: str = "arclength") -> None:
        if n_points < 2 or t_max <= 0:
            raise ValueError(f"need n_points >= 2 and t_max > 0, got {n_points}, {t_max}")
        if resample not in RESAMPLING:
            raise ValueError(f"unknown resampling '{resample}'; choose one of {', '.join(RESAMPLING)}")
        self.n_points, self.t_max, self.resample = n_points, float(t_max), resample

    def __call__(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise ValueError("cannot collate an empty list of sketches")
        sketches, scales = [], []
        for i, sketch in enumerate(items):
            try:
                strokes, scale = stroke3_to_strokes(sketch, self.n_points, self.resample)
            except ValueError as err:
                raise ValueError(f"sketch {i}: {err}") from err
            sketches.append(strokes)
            scales.append(scale)
        counts = [len(s) for s in sketches]
        padded = np.zeros((len(sketches), max(counts), self.n_points, 2), dtype=np.float32)
        for i, strokes in enumerate(sketches):
            padded[i, :len(strokes)] = strokes
        n_strokes = torch.tensor(counts, dtype=torch.int64)
        return {"strokes": torch.from_numpy(padded),
                "stroke_mask": (torch.arange(max(counts)) < n_strokes[:, None]).float(),
                "n_strokes": n_strokes,
                "times": torch.linspace(0.0, self.t_max, self.n_points),
                "scale": torch.tensor(scales, dtype=torch.float32)}
