"""The shared geometry score: Chamfer distance along the drawn strokes, in bounding-box diagonals."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import random_sketches
from sketchlab.metrics import chamfer_distance, resample_along_arc

SQUARE = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [-10, 0, 0], [0, -10, 1]], dtype=np.float32)


def test_identical_drawings_score_zero():
    for s in random_sketches((5, 9, 30)):
        assert chamfer_distance(s, s) == pytest.approx(0.0, abs=1e-12)


def test_points_are_even_along_the_drawn_path_only():
    two = np.array([[0, 0, 0], [10, 0, 1], [0, 100, 0], [10, 0, 1]], dtype=np.float32)  # two strokes, a jump
    pts = resample_along_arc(two, 5)
    assert np.allclose(pts[:, 1][[0, 1]], 0) and np.allclose(pts[-1], [20, 100])
    square = resample_along_arc(SQUARE, 9)  # 40 units of outline, a point every 5
    assert np.allclose(square[:4], [[0, 0], [5, 0], [10, 0], [10, 5]]) and np.allclose(square[-1], [0, 0])


def test_a_shifted_copy_scores_its_shift_over_the_diagonal():
    shifted = SQUARE.copy()
    shifted[0, 1] += 1.0  # the whole square moves down by 1
    # every point of one square is 1 away from the other's matching side or closer; corners exactly 1
    score = chamfer_distance(SQUARE, shifted, n_points=400)
    assert 0.5 / np.hypot(10, 10) < score <= 1.0 / np.hypot(10, 10) + 1e-9


def test_symmetric_and_scale_free():
    a, b = random_sketches((20, 25), seed=3)
    assert chamfer_distance(a, b) == pytest.approx(chamfer_distance(a, b * np.array([1, 1, 1])))
    scaled_a, scaled_b = a * np.array([7.0, 7.0, 1.0]), b * np.array([7.0, 7.0, 1.0])
    assert chamfer_distance(scaled_a, scaled_b) == pytest.approx(chamfer_distance(a, b), rel=1e-9)
    d_ab = chamfer_distance(a, b)
    # symmetric up to the normalisation by the first argument's diagonal
    from sketchlab.data.strokes import bounds

    def diag(s):
        x0, x1, y0, y1 = bounds(s)
        return np.hypot(x1 - x0, y1 - y0)

    assert d_ab * diag(a) == pytest.approx(chamfer_distance(b, a) * diag(b), rel=1e-9)
