"""SketchODE's continuous-time augmentation: smooth Perlin-noise displacements of each stroke.

The paper perturbs strokes with Perlin noise rather than independent per-point jitter, so that the
perturbed sketch is still a smooth curve (a plausible drawing of the same thing). The original
(``data/utils.py: continuous_noise``) evaluates the ``noise`` package's 2-D Perlin noise at each point's
unit-disc coordinates (shifted by a random seed, one seed per stroke, two channels for x and y),
subtracts the stroke's mean displacement and scales by λ (0.2 for QuickDraw; VectorMNIST's 25 copies
of each drawing ramp λ = 0.2·i/25).

Here the noise is 1-D gradient noise along each stroke's arc length, measured in units of the
sketch's radius (the same unit-disc scale), with independent random offsets per stroke and axis: a
smooth function of the position along the stroke, as the paper describes, without the extra package.
Noise values span [-1, 1]; the displacement is ``λ · radius · (noise - mean over the stroke)``.
"""

from __future__ import annotations

import numpy as np

from sketchlab.data.curves import sketch_radius
from sketchlab.data.strokes import from_polylines, to_polylines


def fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic smoothstep ``6t^5 - 15t^4 + 10t^3`` (zero first and second derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def gradient_noise_1d(x: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Classic 1-D Perlin (gradient) noise at ``x``, scaled to [-1, 1].

    ``gradients`` is a periodic table of slopes in [-1, 1] at the integer lattice points; the noise
    is zero at every lattice point and blends the two neighbouring linear ramps with :func:`fade`.
    """
    x = np.asarray(x, dtype=np.float64)
    cell = np.floor(x)
    frac = x - cell
    size = len(gradients)
    left = gradients[cell.astype(np.int64) % size]
    right = gradients[(cell.astype(np.int64) + 1) % size]
    near, far = left * frac, right * (frac - 1.0)
    # The blend peaks at |0.5| (frac = 0.5, slopes of opposite sign): double it to span [-1, 1].
    return 2.0 * (near + fade(frac) * (far - near))


def fractal_noise_1d(x: np.ndarray, gradients: np.ndarray, octaves: int = 1, persistence: float = 0.5,
                     lacunarity: float = 2.0) -> np.ndarray:
    """Sum of ``octaves`` layers of :func:`gradient_noise_1d` (frequency × lacunarity, amplitude × persistence
    per layer), normalised by the total amplitude so it still spans [-1, 1]."""
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    total = np.zeros_like(np.asarray(x, dtype=np.float64))
    amplitude, frequency, norm = 1.0, 1.0, 0.0
    for _ in range(octaves):
        total += amplitude * gradient_noise_1d(np.asarray(x) * frequency, gradients)
        norm += amplitude
        amplitude *= persistence
        frequency *= lacunarity
    return total / norm


class PerlinAugment:
    """Augment callable: displace every stroke by smooth, zero-mean Perlin noise.

    Args:
        strength: λ, the noise amplitude relative to the sketch's radius (0 leaves sketches unchanged).
        frequency: lattice cells per radius of arc length (higher: wigglier noise).
        octaves, persistence, lacunarity: fractal layers of the noise (1 octave is plain Perlin noise).
        table_size: length of the periodic gradient table drawn for each sketch.
    """

    def __init__(self, strength: float = 0.2, frequency: float = 1.0, octaves: int = 1, persistence: float = 0.5,
                 lacunarity: float = 2.0, table_size: int = 256) -> None:
        if strength < 0 or frequency <= 0 or octaves < 1 or table_size < 2:
            raise ValueError(f"need strength >= 0, frequency > 0, octaves >= 1, table_size >= 2; got {strength}, "
                             f"{frequency}, {octaves}, {table_size}")
        self.strength = strength
        self.frequency = frequency
        self.octaves = octaves
        self.persistence = persistence
        self.lacunarity = lacunarity
        self.table_size = table_size

    def displacements(self, lines: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """The (K, 2) displacement of each polyline's points (each with zero mean over its stroke)."""
        radius = sketch_radius(np.concatenate(lines)) if lines else 1.0
        gradients = rng.uniform(-1.0, 1.0, size=(2, self.table_size))
        out = []
        for line in lines:
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
            position = arc / radius * self.frequency
            offsets = rng.uniform(0.0, self.table_size, size=2)
            noise = np.column_stack([
                fractal_noise_1d(position + offsets[axis], gradients[axis], self.octaves, self.persistence,
                                 self.lacunarity)
                for axis in range(2)])
            out.append(self.strength * radius * (noise - noise.mean(axis=0)))
        return out

    def __call__(self, stroke3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        stroke3 = np.asarray(stroke3, dtype=np.float32)
        if stroke3.ndim != 2 or stroke3.shape[1] != 3:
            raise ValueError(f"expected a stroke-3 array of shape (N, 3), got {stroke3.shape}")
        if self.strength == 0 or len(stroke3) == 0:
            return stroke3.copy()
        lines = to_polylines(stroke3)
        moved = [line + shift for line, shift in zip(lines, self.displacements(lines, rng))]
        return from_polylines(moved)
