"""SketchODE's continuous-time augmentation: smooth Perlin-noise displacements of each stroke.

The paper perturbs strokes with Perlin noise rather than independent per-point jitter, so that the
perturbed sketch is still a smooth curve (a plausible drawing of the same thing). The original
(``data/utils.py: continuous_noise``) evaluates the ``noise`` package's 2-D Perlin noise at each point's
unit-disc coordinates (shifted by a random seed, one seed per stroke, two channels for x and y),
subtracts the stroke's mean displacement and scales by λ (0.2 for QuickDraw; VectorMNIST's 25 copies
of each drawing ramp λ = 0.2·i/25).

:class:`PerlinAugment` (``augment=perlin``) uses 1-D gradient noise along each stroke's arc length,
measured in units of the sketch's radius (the same unit-disc scale), with independent random offsets
per stroke and axis: a smooth function of the position along the stroke, as the paper describes.
Noise values span [-1, 1]; the displacement is ``λ · radius · (noise - mean over the stroke)``.

:class:`PerlinOriginalAugment` (``augment=perlin_original``) is the original's jitter itself, with
:func:`pnoise2`, a numpy port of the ``noise`` package's ``pnoise2`` (same values, bit for bit, in
the tests), so the platform does not depend on that unmaintained C extension. Its values are not
rescaled to [-1, 1], so at one λ it moves points less than ``perlin`` does (the README gives the
ratio measured on VectorMNIST).
"""

from __future__ import annotations

from collections.abc import Callable

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


def _jitter(stroke3: np.ndarray, strength: float,
            displacements: Callable[[list[np.ndarray]], list[np.ndarray]]) -> np.ndarray:
    """``stroke3`` with each stroke's points moved by ``displacements(strokes)`` (unchanged at strength 0)."""
    stroke3 = np.asarray(stroke3, dtype=np.float32)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"expected a stroke-3 array of shape (N, 3), got {stroke3.shape}")
    if strength == 0 or len(stroke3) == 0:
        return stroke3.copy()
    lines = to_polylines(stroke3)
    return from_polylines([line + shift for line, shift in zip(lines, displacements(lines))])


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
        return _jitter(stroke3, self.strength, lambda lines: self.displacements(lines, rng))


# -- the original's 2-D Perlin jitter -----------------------------------------------------------------

#: Ken Perlin's permutation of 0..255 (his reference "improved noise"), as the ``noise`` package's C
#: ``pnoise2`` uses it; indexed twice over so ``PERM[a + b]`` never wraps.
_PERLIN_PERMUTATION = (
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30, 69, 142, 8, 99, 37,
    240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117, 35, 11, 32, 57, 177,
    33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71, 134, 139, 48, 27, 166, 77, 146,
    158, 231, 83, 111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41, 55, 46, 245, 40, 244, 102, 143, 54, 65, 25,
    63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89, 18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164,
    100, 109, 198, 173, 186, 3, 64, 52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212,
    207, 206, 59, 227, 47, 16, 58, 17, 182, 189, 28, 42, 223, 183, 170, 213, 119, 248, 152, 2, 44, 154, 163, 70,
    221, 153, 101, 155, 167, 43, 172, 9, 129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112,
    104, 218, 246, 97, 228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14,
    239, 107, 49, 192, 214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138,
    236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180)
PERM = np.array(_PERLIN_PERMUTATION * 2, dtype=np.int64)

#: The (x, y) parts of the ``noise`` package's 16 gradient directions (``GRAD3``: the 12 edges of the cube,
#: then (1,0,-1), (-1,0,-1), (0,-1,1), (0,1,1), which differ from Perlin's own padding of the table).
GRAD2 = np.array([(1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (1, 0), (-1, 0),
                  (0, 1), (0, -1), (0, 1), (0, -1), (1, 0), (-1, 0), (0, -1), (0, 1)], dtype=np.float32)


def _perlin2(x: np.ndarray, y: np.ndarray, repeatx: float, repeaty: float) -> np.ndarray:
    """One octave of 2-D improved Perlin noise, in float32 as the ``noise`` package's C ``noise2``."""
    f32 = np.float32
    x, y = np.asarray(x, dtype=f32), np.asarray(y, dtype=f32)
    i = np.floor(np.fmod(x, f32(repeatx))).astype(np.int64)
    j = np.floor(np.fmod(y, f32(repeaty))).astype(np.int64)
    ii = np.fmod((i + 1).astype(f32), f32(repeatx)).astype(np.int64)
    jj = np.fmod((j + 1).astype(f32), f32(repeaty)).astype(np.int64)
    i, j, ii, jj = i & 255, j & 255, ii & 255, jj & 255
    x = x - np.floor(x)
    y = y - np.floor(y)
    fx = x * x * x * (x * (x * f32(6) - f32(15)) + f32(10))
    fy = y * y * y * (y * (y * f32(6) - f32(15)) + f32(10))
    a, b = PERM[i], PERM[ii]
    aa, ab, ba, bb = PERM[a + j], PERM[a + jj], PERM[b + j], PERM[b + jj]

    def grad(h: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        g = GRAD2[PERM[h] & 15]
        return gx * g[..., 0] + gy * g[..., 1]

    def lerp(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return lo + t * (hi - lo)

    one = f32(1)
    return lerp(fy, lerp(fx, grad(aa, x, y), grad(ba, x - one, y)),
                lerp(fx, grad(ab, x, y - one), grad(bb, x - one, y - one)))


def pnoise2(x: np.ndarray | float, y: np.ndarray | float, octaves: int = 1, persistence: float = 0.5,
            repeatx: float = 1024.0, repeaty: float = 1024.0) -> np.ndarray:
    """Vectorised ``noise.pnoise2`` (Casey Duncan's ``noise`` package, the original's): 2-D improved
    Perlin noise at ``(x, y)``, float32 arithmetic, same arguments and defaults but ``base`` (0 here;
    the C function reads past its table for other bases).

    Coordinates are rounded to float32 first, as the C function receives them; with ``octaves > 1``
    the layers are summed with amplitudes ``persistence**k`` at frequencies ``2**k`` and divided by the
    total amplitude.
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    if octaves == 1:
        return _perlin2(x, y, repeatx, repeaty)
    f32 = np.float32
    total = np.zeros(np.broadcast(x, y).shape, dtype=f32)
    freq, amp, norm = f32(1), f32(1), f32(0)
    for _ in range(octaves):
        total += _perlin2(x * freq, y * freq, f32(repeatx) * freq, f32(repeaty) * freq) * amp
        norm += amp
        freq *= f32(2)
        amp *= f32(persistence)
    return total / norm


class PerlinOriginalAugment:
    """The original's Perlin jitter (``data/utils.py: continuous_noise``, applied by ``Sketch.jitter``).

    In the sketch's unit-disc coordinates (first point at the origin, divided by the largest distance
    from it, as the original's ``move`` and ``scale_spatial``), stroke ``k`` of a sketch gets the seed
    ``s + k`` with ``s`` uniform in ``0 .. max_seed`` per sketch (``random.randint(0, 10000)``), and
    each point ``p`` the displacement ``(pnoise2(p + seed + offset), pnoise2(p + seed - offset))``
    (``offset`` 5 on both axes), minus its stroke's mean, times λ. The result is returned in the
    sketch's own units (the displacement times the radius).

    Args:
        strength: λ (the original's ``perlin_noise``, 0.2 on QuickDraw).
        offset: the shift that decorrelates the x and y channels (the original's ±5).
        max_seed: largest per-sketch seed (inclusive, the original's 10000).
        octaves, persistence: ``pnoise2``'s (the original uses the defaults, 1 and 0.5).
    """

    def __init__(self, strength: float = 0.2, offset: float = 5.0, max_seed: int = 10000, octaves: int = 1,
                 persistence: float = 0.5) -> None:
        if strength < 0 or max_seed < 0 or octaves < 1:
            raise ValueError(f"need strength >= 0, max_seed >= 0 and octaves >= 1; got {strength}, {max_seed}, "
                             f"{octaves}")
        self.strength, self.offset, self.max_seed = strength, offset, max_seed
        self.octaves, self.persistence = octaves, persistence

    def displacements(self, lines: list[np.ndarray], seed: int) -> list[np.ndarray]:
        """The (K, 2) displacement of each polyline's points, in the polylines' units, for one seed."""
        if not lines:
            return []
        origin = lines[0][0]
        radius = sketch_radius(np.concatenate(lines))
        out = []
        for k, line in enumerate(lines):
            # float64 sums, then float32 inside pnoise2: the original's numpy arithmetic and C call
            shifted = (np.asarray(line, dtype=np.float64) - origin) / radius + (seed + k)
            noise = np.column_stack([
                pnoise2(shifted[:, 0] + self.offset, shifted[:, 1] + self.offset, self.octaves, self.persistence),
                pnoise2(shifted[:, 0] - self.offset, shifted[:, 1] - self.offset, self.octaves, self.persistence),
            ]).astype(np.float64)
            out.append(self.strength * radius * (noise - noise.mean(axis=0)))
        return out

    def __call__(self, stroke3: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _jitter(stroke3, self.strength,
                       lambda lines: self.displacements(lines, int(rng.integers(0, self.max_seed + 1))))
