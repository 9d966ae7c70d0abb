"""Polyline simplification: Ramer–Douglas–Peucker and uniform arc-length resampling."""

from __future__ import annotations

import math

import numpy as np


def _as_polyline(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be an (N, 2) array of points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def _distance_to_chord(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of each point to the infinite line through ``start`` and ``end``.

    When the chord is degenerate (a closed stroke) the distance to ``start`` is used instead, so a
    loop is not collapsed to a single point.
    """
    dx, dy = end[0] - start[0], end[1] - start[1]
    rx, ry = points[:, 0] - start[0], points[:, 1] - start[1]
    length = math.hypot(dx, dy)
    if length == 0.0:
        return np.hypot(rx, ry)
    return np.abs(dx * ry - dy * rx) / length


def rdp_mask(points: np.ndarray, epsilon: float) -> np.ndarray:
    """Boolean mask of the points that Ramer–Douglas–Peucker keeps (first and last always kept).

    Iterative with an explicit stack of intervals, so long strokes cannot hit Python's recursion
    limit; distances within an interval are vectorised. Ties go to the earliest point, as in the
    textbook recursive version.
    """
    pts = _as_polyline(points, "points")[:, :2]
    if epsilon < 0 or not np.isfinite(epsilon):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    n = len(pts)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        dist = _distance_to_chord(pts[first + 1:last], pts[first], pts[last])
        i = int(np.argmax(dist))
        if dist[i] > epsilon:
            split = first + 1 + i
            keep[split] = True
            stack.append((split, last))
            stack.append((first, split))
    return keep


def rdp(points: np.ndarray, epsilon: float) -> np.ndarray:
    """Simplify a polyline with Ramer–Douglas–Peucker: drop points within ``epsilon`` of the kept chords.

    Extra columns beyond x, y (e.g. timestamps) are carried along for the kept points.
    """
    arr = np.asarray(points)
    return arr[rdp_mask(arr, epsilon)]


def resample(polyline: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` units of arc length along ``polyline``, starting at its first point.

    The last point of the polyline is always kept, so the resampled stroke ends where the original
    does. Repeated points are dropped first; a stroke that never moves comes back as one point.
    """
    pts = _as_polyline(polyline, "polyline")[:, :2]
    if not spacing > 0 or not np.isfinite(spacing):
        raise ValueError(f"spacing must be a finite number > 0, got {spacing}")
    if len(pts) == 0:
        return pts.copy()
    # Zero-length segments would give np.interp a non-increasing arc length.
    moved = np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0, axis=1)])
    pts = pts[moved]
    if len(pts) < 2:
        return pts.copy()
    seg = np.hypot(*np.diff(pts, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    total = arc[-1]
    targets = np.arange(0.0, total, spacing)
    if total - targets[-1] > 1e-9:
        targets = np.append(targets, total)
    x = np.interp(targets, arc, pts[:, 0])
    y = np.interp(targets, arc, pts[:, 1])
    return np.column_stack([x, y])
