"""Conversions between the stroke formats used by sketch models.

- stroke-3: (N, 3) rows ``(dx, dy, pen_lift)``; ``pen_lift = 1`` on the last point of each stroke
  (Sketch-RNN's storage format, offsets from the previous point).
- stroke-5: (N, 5) rows ``(dx, dy, p_down, p_up, p_end)``, one-hot pen state (Sketch-RNN's model format).
- polylines: a list of (K, 2) absolute point arrays, one per stroke.
- points: (N, 3) absolute ``(x, y, pen_lift)`` rows (how VectorMNIST/UNIPEN and friends are stored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_stroke5(stroke3: np.ndarray, max_len: int | None = None) -> np.ndarray:
    """Stroke-3 to stroke-5, padded with end-of-sketch rows ``(0, 0, 0, 0, 1)`` up to ``max_len``.

    As magenta's ``to_big_strokes``: the last real row keeps its pen state, padding marks the end.
    """
    n = len(stroke3)
    max_len = n if max_len is None else max_len
    if n > max_len:
        raise ValueError(f"sketch has {n} points, more than max_len={max_len}")
    out = np.zeros((max_len, 5), dtype=np.float32)
    out[:n, 0:2] = stroke3[:, 0:2]
    out[:n, 3] = stroke3[:, 2]
    out[:n, 2] = 1 - stroke3[:, 2]
    out[n:, 4] = 1
    return out


def to_stroke3(stroke5: np.ndarray) -> np.ndarray:
    """Stroke-5 to stroke-3, cut at the first end-of-sketch row (as magenta's ``to_normal_strokes``)."""
    stroke5 = np.asarray(stroke5)
    ends = np.nonzero(stroke5[:, 4] > 0)[0]
    n = int(ends[0]) if len(ends) else len(stroke5)
    out = np.zeros((n, 3), dtype=np.float32)
    out[:, 0:2] = stroke5[:n, 0:2]
    out[:, 2] = stroke5[:n, 3]
    return out


def to_polylines(stroke3: np.ndarray, start: tuple[float, float] = (0.0, 0.0)) -> list[np.ndarray]:
    """Stroke-3 offsets to absolute polylines (magenta's ``strokes_to_lines``)."""
    stroke3 = np.asarray(stroke3, dtype=np.float64)
    if len(stroke3) == 0:
        return []
    xy = np.cumsum(stroke3[:, 0:2], axis=0) + np.asarray(start)
    ends = np.nonzero(stroke3[:, 2] > 0.5)[0]
    lines, begin = [], 0
    for end in ends:
        lines.append(xy[begin:end + 1])
        begin = end + 1
    if begin < len(xy):
        lines.append(xy[begin:])
    return [line for line in lines if len(line)]


def from_polylines(lines: Sequence[np.ndarray], first_offset: bool = True) -> np.ndarray:
    """Absolute polylines to stroke-3 (magenta's ``lines_to_strokes``).

    With ``first_offset`` the first row is the first point itself (an offset from the origin), as in
    magenta; otherwise the first row is forced to ``(0, 0)``.
    """
    lines = [np.asarray(line, dtype=np.float64).reshape(-1, 2) for line in lines if len(line)]
    if not lines:
        return np.zeros((0, 3), dtype=np.float32)
    points = np.concatenate(lines, axis=0)
    pen = np.concatenate([np.eye(1, len(line), len(line) - 1)[0] for line in lines])
    deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    if not first_offset:
        deltas[0] = 0.0
    return np.column_stack([deltas, pen]).astype(np.float32)


def points_to_stroke3(points: np.ndarray) -> np.ndarray:
    """Absolute ``(x, y, pen_lift)`` rows to stroke-3 offsets; the first row is an offset from the first point."""
    points = np.asarray(points, dtype=np.float64)
    out = np.zeros((len(points), 3), dtype=np.float32)
    if len(points):
        out[1:, 0:2] = np.diff(points[:, 0:2], axis=0)
        out[:, 2] = points[:, 2]
        out[-1, 2] = 1.0
    return out


def stroke3_to_points(stroke3: np.ndarray) -> np.ndarray:
    """Stroke-3 offsets to absolute ``(x, y, pen_lift)`` rows starting at the origin."""
    stroke3 = np.asarray(stroke3, dtype=np.float64)
    out = np.zeros((len(stroke3), 3), dtype=np.float64)
    out[:, 0:2] = np.cumsum(stroke3[:, 0:2], axis=0)
    out[:, 2] = stroke3[:, 2]
    return out


def bounds(stroke3: np.ndarray) -> tuple[float, float, float, float]:
    """``(min_x, max_x, min_y, max_y)`` of the absolute points of a stroke-3 sketch (magenta's ``get_bounds``)."""
    xy = np.cumsum(np.asarray(stroke3, dtype=np.float64)[:, 0:2], axis=0)
    if len(xy) == 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(xy[:, 0].min()), float(xy[:, 0].max()), float(xy[:, 1].min()), float(xy[:, 1].max())


def scale_factor(sketches: Sequence[np.ndarray]) -> float:
    """Standard deviation of all offsets, the normaliser of magenta's ``calculate_normalizing_scale_factor``."""
    if not sketches:
        raise ValueError("cannot compute a scale factor from an empty set of sketches")
    offsets = np.concatenate([np.asarray(s, dtype=np.float64)[:, 0:2].reshape(-1) for s in sketches])
    std = float(np.std(offsets))
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"degenerate scale factor {std}: all offsets are equal")
    return std


def clean(stroke3: np.ndarray, limit: float = 1000.0) -> np.ndarray:
    """Clip offsets to ``[-limit, limit]`` and cast to float32, as magenta's ``preprocess``."""
    out = np.asarray(stroke3, dtype=np.float32).copy()
    np.clip(out[:, 0:2], -limit, limit, out=out[:, 0:2])
    return out
