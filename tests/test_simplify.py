"""Ramer–Douglas–Peucker and arc-length resampling."""

from __future__ import annotations

import numpy as np
import pytest

from sketchlab.data.simplify import rdp, rdp_mask, resample

# Worked by hand. Chord (0,0)-(8,0): distances 1, 0, 3, so (6,3) is kept. Chord (0,0)-(6,3), direction
# (6,3)/sqrt(45): (2,1) lies on it, (4,0) is |6*0 - 3*4| / sqrt(45) = 1.789 away. Chord (0,0)-(4,0): (2,1) is 1 away.
HAND = np.array([[0, 0], [2, 1], [4, 0], [6, 3], [8, 0]], dtype=float)


def test_rdp_hand_worked_case():
    np.testing.assert_array_equal(rdp(HAND, 1.5), [[0, 0], [4, 0], [6, 3], [8, 0]])
    np.testing.assert_array_equal(rdp(HAND, 2.0), [[0, 0], [6, 3], [8, 0]])
    np.testing.assert_array_equal(rdp(HAND, 0.5), HAND)
    np.testing.assert_array_equal(rdp(HAND, 3.0), [[0, 0], [8, 0]])


def _line_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    n = np.hypot(*d)
    return float(np.hypot(*(p - a)) if n == 0 else abs(d[0] * (p - a)[1] - d[1] * (p - a)[0]) / n)


@pytest.mark.parametrize("seed", range(5))
def test_rdp_invariants_on_random_walks(seed):
    rng = np.random.default_rng(seed)
    pts = np.cumsum(rng.normal(scale=3.0, size=(300, 2)), axis=0)
    eps = 2.0
    keep = rdp_mask(pts, eps)
    kept = np.nonzero(keep)[0]
    assert keep[0] and keep[-1]
    assert 2 < len(kept) < len(pts)
    # Every dropped point lies within eps of the chord between the kept points around it.
    for a, b in zip(kept[:-1], kept[1:]):
        for i in range(a + 1, b):
            assert _line_distance(pts[i], pts[a], pts[b]) <= eps + 1e-9
    # Simplifying again changes nothing, and a larger epsilon keeps a subset.
    np.testing.assert_array_equal(rdp(rdp(pts, eps), eps), rdp(pts, eps))
    assert not np.any(rdp_mask(pts, 4 * eps) & ~keep)


def test_rdp_drops_collinear_points_and_keeps_closed_loops():
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])
    np.testing.assert_array_equal(rdp(line, 0.0), line[[0, -1]])
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float)
    np.testing.assert_array_equal(rdp(square, 1.0), [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]])


def test_rdp_deep_splits_need_no_recursion():
    # On an exponential curve each split peels off a point near the end: thousands of levels deep.
    x = np.linspace(0.0, 40.0, 5000)
    pts = np.column_stack([x, np.exp(x)])
    assert len(rdp(pts, 1e-12)) == len(pts)


def test_rdp_carries_extra_columns_and_handles_tiny_inputs():
    with_time = np.column_stack([HAND, np.arange(5) * 10.0])
    np.testing.assert_array_equal(rdp(with_time, 2.0)[:, 2], [0, 30, 40])
    assert rdp(np.zeros((0, 2)), 1.0).shape == (0, 2)
    np.testing.assert_array_equal(rdp([[1.0, 2.0]], 1.0), [[1.0, 2.0]])


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_rdp_rejects_bad_epsilon(bad):
    with pytest.raises(ValueError, match="epsilon"):
        rdp(HAND, bad)


def test_rdp_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        rdp(np.arange(5.0), 1.0)


def test_resample_straight_line():
    out = resample([[0, 0], [10.5, 0]], 1.0)
    np.testing.assert_allclose(out[:, 0], [*range(11), 10.5])
    np.testing.assert_allclose(out[:, 1], 0.0)


def test_resample_keeps_spacing_along_a_polyline():
    poly = np.array([[0, 0], [3.0, 0], [3.0, 4.0], [0.5, 4.0]])
    out = resample(poly, 0.5)
    steps = np.hypot(*np.diff(out, axis=0).T)
    # Along straight runs the step is the spacing; across the corner it is a chord, never longer.
    assert np.all(steps <= 0.5 + 1e-9)
    np.testing.assert_allclose(out[[0, -1]], poly[[0, -1]])
    assert len(out) == 1 + int(np.ceil(9.5 / 0.5))
    # Every point lies on the polyline (on one of its axis-aligned segments here).
    on_line = (np.isclose(out[:, 1], 0) & (out[:, 0] <= 3)) | np.isclose(out[:, 0], 3) | np.isclose(out[:, 1], 4)
    assert on_line.all()


def test_resample_degenerate_strokes():
    np.testing.assert_array_equal(resample([[2.0, 3.0]], 1.0), [[2.0, 3.0]])
    np.testing.assert_array_equal(resample([[2.0, 3.0], [2.0, 3.0], [2.0, 3.0]], 1.0), [[2.0, 3.0]])
    np.testing.assert_allclose(resample([[0, 0], [0, 0], [2, 0]], 1.0), [[0, 0], [1, 0], [2, 0]])
    assert resample(np.zeros((0, 2)), 1.0).shape == (0, 2)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_resample_rejects_bad_spacing(bad):
    with pytest.raises(ValueError, match="spacing"):
        resample([[0, 0], [1, 1]], bad)
