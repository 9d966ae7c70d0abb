"""Perlin-noise augmentation: the noise itself, and what it does to sketches."""

from __future__ import annotations

import numpy as np
import pytest

from sketchlab.data.perlin import PerlinAugment, fade, fractal_noise_1d, gradient_noise_1d
from sketchlab.data.strokes import from_polylines, to_polylines


@pytest.fixture
def gradients() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=64)


def sketch() -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 40)
    circle = np.column_stack([5 * np.cos(angles), 5 * np.sin(angles)])
    return from_polylines([circle, np.array([[-2.0, 0.0], [2.0, 0.0], [2.0, 3.0]]), np.array([[7.0, 7.0]])])


def test_fade_is_a_smoothstep():
    np.testing.assert_allclose(fade(np.array([0.0, 0.5, 1.0])), [0.0, 0.5, 1.0])


def test_gradient_noise_is_zero_on_the_lattice_and_within_range(gradients):
    np.testing.assert_allclose(gradient_noise_1d(np.arange(0, 70, dtype=float), gradients), 0.0, atol=1e-12)
    x = np.linspace(0, 64, 20001)
    values = gradient_noise_1d(x, gradients)
    assert np.abs(values).max() <= 1.0 and np.abs(values).max() > 0.2


def test_gradient_noise_is_continuous_with_continuous_slope(gradients):
    x = np.linspace(0.0, 20.0, 200001)
    values = gradient_noise_1d(x, gradients)
    step = x[1] - x[0]
    assert np.abs(np.diff(values)).max() < 2.5 * step  # Lipschitz: no jumps anywhere
    # Across a lattice point the slope is the same from both sides: 2 × that point's gradient.
    eps = 1e-6
    for k in (3, 7, 11):
        left = (gradient_noise_1d(k, gradients) - gradient_noise_1d(k - eps, gradients)) / eps
        right = (gradient_noise_1d(k + eps, gradients) - gradient_noise_1d(k, gradients)) / eps
        assert left == pytest.approx(right, abs=1e-4)
        assert right == pytest.approx(2 * gradients[k % len(gradients)], abs=1e-4)


def test_gradient_table_is_periodic(gradients):
    x = np.linspace(0.0, 5.0, 101)
    np.testing.assert_allclose(gradient_noise_1d(x, gradients), gradient_noise_1d(x + len(gradients), gradients))


def test_fractal_noise_keeps_the_range_and_one_octave_is_plain_noise(gradients):
    x = np.linspace(0, 30, 5001)
    np.testing.assert_allclose(fractal_noise_1d(x, gradients, octaves=1), gradient_noise_1d(x, gradients))
    assert np.abs(fractal_noise_1d(x, gradients, octaves=4)).max() <= 1.0
    with pytest.raises(ValueError, match="octaves"):
        fractal_noise_1d(x, gradients, octaves=0)


def test_augment_moves_each_stroke_by_zero_mean_noise_and_keeps_the_structure():
    original = sketch()
    out = PerlinAugment(strength=0.2)(original, np.random.default_rng(1))
    assert out.shape == original.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 2], original[:, 2])
    before, after = to_polylines(original), to_polylines(out)
    assert len(before) == len(after) == 3
    for a, b in zip(before, after):
        np.testing.assert_allclose((b - a).mean(axis=0), 0.0, atol=1e-4)
    shift = np.linalg.norm(after[0] - before[0], axis=1)
    assert 0 < shift.max() <= 2 * 0.2 * 8.6  # λ · radius (the farthest point is ~8.6 from the first) · range
    np.testing.assert_allclose(after[2], before[2], atol=1e-5)  # a single spot has nothing to wiggle


def test_augment_is_deterministic_given_the_rng_and_varies_across_seeds():
    aug = PerlinAugment(strength=0.2, octaves=2)
    a = aug(sketch(), np.random.default_rng(7))
    b = aug(sketch(), np.random.default_rng(7))
    c = aug(sketch(), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_scales_with_strength_and_with_the_sketch():
    base = sketch()
    shifts = {}
    for strength in (0.1, 0.2):
        out = PerlinAugment(strength=strength)(base, np.random.default_rng(3))
        shifts[strength] = np.cumsum(out[:, :2], axis=0) - np.cumsum(base[:, :2], axis=0)
    np.testing.assert_allclose(shifts[0.2], 2 * shifts[0.1], atol=1e-4)
    big = base.copy()
    big[:, :2] *= 10
    out_big = PerlinAugment(strength=0.2)(big, np.random.default_rng(3))
    np.testing.assert_allclose(out_big[:, :2], 10 * PerlinAugment(strength=0.2)(base, np.random.default_rng(3))[:, :2],
                               rtol=1e-4, atol=1e-3)


def test_zero_strength_is_the_identity_and_bad_settings_fail():
    np.testing.assert_array_equal(PerlinAugment(strength=0.0)(sketch(), np.random.default_rng(0)), sketch())
    with pytest.raises(ValueError, match="strength"):
        PerlinAugment(strength=-1)
    with pytest.raises(ValueError, match="stroke-3"):
        PerlinAugment()(np.zeros((3, 2)), np.random.default_rng(0))
