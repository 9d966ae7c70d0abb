"""SketchODE's curve representation: stroke-3 → unit-disc curve in time → stroke-3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchlab.data.curves import CurveCollate, curve_to_stroke3, sketch_radius, stroke3_to_curve
from sketchlab.data.strokes import from_polylines, to_polylines


def three_strokes() -> np.ndarray:
    """A square, a diagonal and a half circle, apart from each other, starting away from the origin."""
    square = np.array([[2, 2], [6, 2], [6, 6], [2, 6], [2, 2]], dtype=float)
    diagonal = np.array([[8, 0], [12, 4]], dtype=float)
    angles = np.linspace(0, np.pi, 12)
    arc = np.column_stack([10 + 3 * np.cos(angles), 9 + 3 * np.sin(angles)])
    return from_polylines([square, diagonal, arc])


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest segment of ``line``."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(axis=1)


def test_curve_starts_at_the_origin_inside_the_unit_disc_on_a_uniform_time_grid():
    curve = stroke3_to_curve(three_strokes(), n_points=100, t_max=5.0)
    assert curve.points.shape == (100, 3) and curve.points.dtype == np.float32
    np.testing.assert_allclose(curve.times, np.linspace(0, 5, 100), atol=1e-6)
    np.testing.assert_allclose(curve.points[0, :2], 0.0, atol=1e-7)
    assert np.linalg.norm(curve.points[:, :2], axis=1).max() <= 1.0 + 1e-6
    assert set(np.unique(curve.points[:, 2])) == {0.0, 1.0}
    assert curve.points[0, 2] == 0 and curve.points[-1, 2] == 0  # drawing at both ends
    xy = np.cumsum(three_strokes()[:, :2], axis=0)
    assert curve.scale == pytest.approx(np.linalg.norm(xy - xy[0], axis=1).max())


def test_round_trip_keeps_strokes_and_shape_within_the_resampling_error():
    sketch = three_strokes()
    curve = stroke3_to_curve(sketch, n_points=200)
    back = curve_to_stroke3(curve.points, scale=curve.scale)
    original = [line - to_polylines(sketch)[0][0] for line in to_polylines(sketch)]
    restored = to_polylines(back)
    assert len(restored) == len(original) == 3
    spacing = curve.scale * 5.0 / 199 * 2  # a generous bound on the arc length between two samples
    for line, new in zip(original, restored):
        # Samples lie on the drawn polyline (linear interpolation) and reach close to both of its ends.
        assert distance_to_polyline(new, line).max() < 1e-4 * curve.scale
        assert np.linalg.norm(new[0] - line[0]) < spacing
        assert np.linalg.norm(new[-1] - line[-1]) < spacing


def test_time_runs_at_constant_speed_along_a_straight_stroke():
    line = from_polylines([np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 5.0]])])
    curve = stroke3_to_curve(line, n_points=31)
    steps = np.linalg.norm(np.diff(curve.points[:, :2], axis=0), axis=1)
    np.testing.assert_allclose(steps, steps.mean(), rtol=1e-4)


def test_a_stroke_that_starts_where_the_last_ended_stays_separate():
    touching = from_polylines([np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([[4.0, 0.0], [4.0, 4.0]])])
    curve = stroke3_to_curve(touching, n_points=100)
    assert curve.points[:, 2].sum() >= 1  # a pen-up gap of at least a third of the first stroke
    assert len(to_polylines(curve_to_stroke3(curve.points))) == 2


def test_a_single_spot_becomes_a_curve_resting_at_the_origin():
    curve = stroke3_to_curve(np.array([[3.0, 4.0, 1.0]], dtype=np.float32), n_points=10)
    np.testing.assert_array_equal(curve.points, 0.0)
    assert curve.scale == 1.0
    assert len(to_polylines(curve_to_stroke3(curve.points))) == 1


def test_inverse_reads_pen_probabilities_and_handles_a_pen_that_never_lands():
    xy = np.column_stack([np.linspace(0, 1, 6), np.zeros(6)])
    pen = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.4])
    lines = to_polylines(curve_to_stroke3(xy, pen, threshold=0.5, scale=2.0))
    assert [len(line) for line in lines] == [2, 2]
    np.testing.assert_allclose(lines[1], 2.0 * xy[4:6])
    assert curve_to_stroke3(xy, np.ones(6)).shape == (0, 3)


def test_sketch_radius_is_measured_from_the_first_point():
    assert sketch_radius(np.array([[1.0, 1.0], [4.0, 5.0]])) == pytest.approx(5.0)
    assert sketch_radius(np.array([[2.0, 2.0]])) == 1.0


def test_collate_batches_curves_with_shared_times():
    sketches = [three_strokes(), three_strokes()[:5] * 0.5]
    batch = CurveCollate(n_points=40, t_max=2.0)(sketches)
    assert list(batch) == ["curve", "times", "scale"]  # the engine takes the batch size from the first entry
    assert batch["curve"].shape == (2, 40, 3) and batch["curve"].dtype == torch.float32
    assert batch["times"].shape == (40,) and float(batch["times"][-1]) == pytest.approx(2.0)
    assert batch["scale"].shape == (2,)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros((4, 2)), np.array([[np.nan, 0.0, 1.0]])])
def test_bad_sketches_are_refused_with_a_clear_error(bad):
    with pytest.raises(ValueError, match="sketch 0"):
        CurveCollate()([bad])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="n_points"):
        stroke3_to_curve(three_strokes(), n_points=1)
    with pytest.raises(ValueError, match="t_max"):
        stroke3_to_curve(three_strokes(), t_max=0)
    with pytest.raises(ValueError, match="pen"):
        curve_to_stroke3(np.zeros((5, 2)))
