import numpy as np
import pytest

from sketchlab.data import strokes as S


def test_stroke5_round_trip_and_padding():
    s3 = np.array([[1, 2, 0], [3, -1, 1], [0, 5, 0], [2, 2, 1]], dtype=np.float32)
    s5 = S.to_stroke5(s3, max_len=6)
    assert s5.shape == (6, 5)
    np.testing.assert_array_equal(s5[:4, 2], [1, 0, 1, 0])
    np.testing.assert_array_equal(s5[:4, 3], [0, 1, 0, 1])
    np.testing.assert_array_equal(s5[4:], [[0, 0, 0, 0, 1]] * 2)
    np.testing.assert_array_equal(S.to_stroke3(s5), s3)
    with pytest.raises(ValueError, match="max_len"):
        S.to_stroke5(s3, max_len=3)


def test_polylines_round_trip():
    lines = [np.array([[5.0, 5.0], [6.0, 5.0], [6.0, 7.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])]
    s3 = S.from_polylines(lines)
    np.testing.assert_array_equal(s3[0], [5, 5, 0])  # first row: absolute position of the first point
    np.testing.assert_array_equal(s3[:, 2], [0, 0, 1, 0, 1])
    back = S.to_polylines(s3)
    assert len(back) == 2
    for a, b in zip(lines, back):
        np.testing.assert_allclose(a, b)


def test_points_stroke3_round_trip():
    pts = np.array([[10, 10, 0], [12, 11, 1], [20, 5, 0], [21, 6, 1]], dtype=np.float64)
    s3 = S.points_to_stroke3(pts)
    np.testing.assert_array_equal(s3[0], [0, 0, 0])
    np.testing.assert_allclose(S.stroke3_to_points(s3)[:, :2] + pts[0, :2], pts[:, :2])


def test_scale_factor_and_bounds():
    a = np.array([[1, -1, 0], [3, 3, 1]], dtype=np.float32)
    assert S.scale_factor([a]) == pytest.approx(np.std([1, -1, 3, 3]))
    assert S.bounds(a) == (1.0, 4.0, -1.0, 2.0)
    with pytest.raises(ValueError):
        S.scale_factor([])
    with pytest.raises(ValueError, match="degenerate"):
        S.scale_factor([np.zeros((3, 3))])
