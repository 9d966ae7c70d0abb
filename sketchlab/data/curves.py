"""SketchODE's representation: a whole sketch as one continuous-time curve ``[x(t), y(t), pen(t)]``.

Following the original (``data/sketch.py``, ``data/synth.py``, ``data/batching.py``):

- the sketch is moved so that its first point is the origin and scaled into the unit disc
  (divided by the largest distance of a point from the origin);
- consecutive strokes are joined by straight pen-up segments, and the pen channel says whether the pen
  is travelling (1, pen up) or drawing (0);
- time runs along the drawing at constant speed (time = arc length, as ``synth.py`` builds VectorMNIST's
  timestamps); a pen-up segment lasts its own length, but at least ``penup_fraction`` of the preceding
  stroke (``synth.py``'s pen-up duration is a third of the previous stroke's), so two strokes never
  merge even when one starts where the other ended;
- the curve is resampled at ``n_points`` uniformly spaced times and the time axis scaled to ``[0, t_max]``
  (the original's ``scale_time=5``).

The original resampled uniformly in *point index* with a spline (``data/utils.py: resample``), which
makes the curve's speed depend on how densely the data happens to be sampled (RDP-simplified
QuickDraw strokes have very uneven point spacing) and gives every pen-up join the same 18 points
however far the pen travels; uniform time along arc length is the continuous-time reading of the same
data, and linear interpolation keeps corners and straight segments exact. ``resample="index"``
reproduces the original instead (see :func:`index_curve`). The inverse, :func:`curve_to_stroke3`,
thresholds the pen channel and turns each run of drawing points into a stroke.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchcde

from sketchlab.data.strokes import from_polylines, to_polylines

#: Shortest pen-up duration, in unit-disc lengths: keeps knot times strictly increasing.
MIN_PENUP = 1e-6
#: How a sketch's points are laid out in time: along arc length (ours) or uniform in point index (the original's).
RESAMPLE_MODES = ("arclength", "index")
#: Points of the original's straight pen-up join between two strokes, both ends included
#: (``Sketch.tensorize(joining_granularity=20)``; the ends coincide with the strokes' and are dropped).
ORIGINAL_JOIN_POINTS = 20


@dataclass
class Curve:
    """One sketch as a resampled curve: ``points`` (G, 3) float32 rows ``(x, y, pen)`` at ``times`` (G,),
    in units of ``scale`` (the sketch's radius around its first point)."""

    points: np.ndarray
    times: np.ndarray
    scale: float


def sketch_radius(xy: np.ndarray) -> float:
    """Largest distance of a point from the first one (the unit-disc normaliser); 1.0 for a single spot."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return 1.0
    radius = float(np.linalg.norm(xy - xy[0], axis=1).max())
    return radius if radius > 0 else 1.0


def _drop_repeats(line: np.ndarray) -> np.ndarray:
    """A polyline without consecutive duplicate points (zero-length segments have no duration)."""
    if len(line) < 2:
        return line
    keep = np.concatenate([[True], np.any(np.diff(line, axis=0) != 0, axis=1)])
    return line[keep]


def _knots(lines: Sequence[np.ndarray],
           penup_fraction: float) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Knot positions (K, 2), knot times (K,) (arc length) and the open pen-up intervals between strokes."""
    points, times, penups = [], [], []
    clock = 0.0
    for k, line in enumerate(lines):
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        stroke_t = clock + np.concatenate([[0.0], np.cumsum(seg)])
        points.append(line)
        times.append(stroke_t)
        clock = float(stroke_t[-1])
        if k + 1 < len(lines):
            travel = float(np.linalg.norm(lines[k + 1][0] - line[-1]))
            duration = max(travel, penup_fraction * float(seg.sum()), MIN_PENUP)
            penups.append((clock, clock + duration))
            clock += duration
    return np.concatenate(points), np.concatenate(times), penups


def index_curve(lines: Sequence[np.ndarray], n_points: int) -> np.ndarray:
    """The original's one-sequence representation (``OneSeq.represent``) of unit-disc polylines, (n_points, 3).

    Strokes of one point are dropped (``Sketch`` does), consecutive strokes are joined by
    :data:`ORIGINAL_JOIN_POINTS` - 2 evenly spaced pen-up points, and the sequence is resampled at
    ``n_points`` positions uniform in point index on its natural cubic spline over index knots
    (``torchcde.natural_cubic_coeffs`` without times, as ``data/utils.py: resample``); the spline's pen
    channel is thresholded at 0.5.
    """
    strokes = [line for line in lines if len(line) > 1] or list(lines[:1])
    alpha = np.linspace(0.0, 1.0, ORIGINAL_JOIN_POINTS)[1:-1, None]
    parts = [np.column_stack([strokes[0], np.zeros(len(strokes[0]))])]
    for prev, nxt in zip(strokes, strokes[1:]):
        join = prev[-1] * (1.0 - alpha) + nxt[0] * alpha
        parts += [np.column_stack([join, np.ones(len(join))]), np.column_stack([nxt, np.zeros(len(nxt))])]
    seq = np.concatenate(parts)
    if len(seq) == 1:
        return np.repeat(seq, n_points, axis=0)
    path = torch.from_numpy(seq).unsqueeze(0)
    spline = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(path))
    points = spline.evaluate(torch.linspace(0.0, len(seq) - 1.0, n_points, dtype=path.dtype))[0].numpy()
    points[:, 2] = (points[:, 2] >= 0.5).astype(np.float64)
    return points


def stroke3_to_curve(stroke3: np.ndarray, n_points: int = 100, t_max: float = 5.0,
                     penup_fraction: float = 1 / 3, resample: str = "arclength") -> Curve:
    """A stroke-3 sketch as a :class:`Curve` of ``n_points`` samples uniform in time over ``[0, t_max]``.

    ``resample`` is ``arclength`` (time runs along the drawing, module doc) or ``index`` (the original's
    uniform-in-index spline with fixed pen-up joins, :func:`index_curve`; ``penup_fraction`` is unused).
    """
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"unknown resample '{resample}'; choose one of {', '.join(RESAMPLE_MODES)}")
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    if t_max <= 0:
        raise ValueError(f"t_max must be positive, got {t_max}")
    if penup_fraction < 0:
        raise ValueError(f"penup_fraction must be >= 0, got {penup_fraction}")
    stroke3 = np.asarray(stroke3, dtype=np.float64)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"expected a stroke-3 array of shape (N, 3), got {stroke3.shape}")
    if len(stroke3) == 0:
        raise ValueError("cannot turn an empty sketch into a curve")
    if not np.isfinite(stroke3).all():
        raise ValueError("the sketch has non-finite coordinates")
    lines = to_polylines(stroke3)
    times = np.linspace(0.0, t_max, n_points)
    if resample == "index":  # the original normalises after dropping one-point strokes
        lines = [line for line in lines if len(line) > 1] or lines[:1]
    origin = lines[0][0].copy()
    scale = sketch_radius(np.concatenate(lines))
    if resample == "index":
        points = index_curve([(line - origin) / scale for line in lines], n_points)
        return Curve(points.astype(np.float32), times.astype(np.float32), scale)
    lines = [_drop_repeats((line - origin) / scale) for line in lines]
    knot_xy, knot_t, penups = _knots(lines, penup_fraction)
    points = np.zeros((n_points, 3), dtype=np.float64)
    if knot_t[-1] > 0:
        factor = t_max / knot_t[-1]
        knot_t = knot_t * factor
        points[:, 0] = np.interp(times, knot_t, knot_xy[:, 0])
        points[:, 1] = np.interp(times, knot_t, knot_xy[:, 1])
        for start, end in penups:
            points[(times > start * factor) & (times < end * factor), 2] = 1.0
    return Curve(points.astype(np.float32), times.astype(np.float32), scale)


def curve_to_stroke3(points: np.ndarray, pen: np.ndarray | None = None, threshold: float = 0.5,
                     scale: float = 1.0) -> np.ndarray:
    """A curve back to stroke-3: each run of drawing samples (pen < ``threshold``) becomes a stroke.

    ``points`` is (G, 2) with ``pen`` (G,) pen-up probabilities, or (G, 3) with the pen in its last
    column; coordinates are multiplied by ``scale`` (a :class:`Curve`'s, to return to the data's
    units). A curve that never puts the pen down gives an empty (0, 3) sketch.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"expected curve points of shape (G, 2) or (G, 3), got {points.shape}")
    if pen is None:
        if points.shape[1] != 3:
            raise ValueError("pass the pen channel: points have no third column")
        pen = points[:, 2]
    pen = np.asarray(pen, dtype=np.float64).reshape(-1)
    if len(pen) != len(points):
        raise ValueError(f"pen has {len(pen)} values for {len(points)} points")
    drawing = pen < threshold
    # Run boundaries: where "drawing" switches on (+1) or off (-1).
    edges = np.diff(np.concatenate([[0], drawing.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    lines = [points[s:e, :2] * scale for s, e in zip(starts, ends)]
    return from_polylines(lines)


class CurveCollate:
    """Stroke-3 sketches to SketchODE batches.

    Returns ``{"curve": (B, G, 3) float32 [x, y, pen], "times": (G,) float32, "scale": (B,) float32}``;
    ``scale`` is each sketch's unit-disc radius (to put reconstructions back in the data's units).
    ``resample``: ``arclength`` (default) or ``index`` (the original's), see :func:`stroke3_to_curve`.
    """

    def __init__(self, n_points: int = 100, t_max: float = 5.0, penup_fraction: float = 1 / 3,
                 resample: str = "arclength") -> None:
        if n_points < 2 or t_max <= 0 or penup_fraction < 0:
            raise ValueError(f"need n_points >= 2, t_max > 0 and penup_fraction >= 0, "
                             f"got {n_points}, {t_max}, {penup_fraction}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"unknown model.collate.resample '{resample}'; choose one of {', '.join(RESAMPLE_MODES)}")
        self.n_points = n_points
        self.t_max = t_max
        self.penup_fraction = penup_fraction
        self.resample = resample

    def __call__(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise ValueError("cannot collate an empty list of sketches")
        curves = []
        for i, sketch in enumerate(items):
            try:
                curves.append(stroke3_to_curve(sketch, self.n_points, self.t_max, self.penup_fraction,
                                               self.resample))
            except ValueError as err:
                raise ValueError(f"sketch {i}: {err}") from err
        return {"curve": torch.from_numpy(np.stack([c.points for c in curves])),
                "times": torch.from_numpy(curves[0].times.copy()),
                "scale": torch.tensor([c.scale for c in curves], dtype=torch.float32)}
