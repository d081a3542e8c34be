"""Smooth fields of global position: cubic B-splines over values on a hashed lattice.

A field is a cubic B-spline through values given at the integer lattice points ``(i, j)`` times
its ``spacing``. The values come from a *lattice function* of integer coordinates: hashed uniform
numbers (value noise), or anything else evaluated at the lattice points (a fractal sum of coarser
noises, the tissue outline). Evaluating a field on a pixel grid (separably, cheap) or at scattered
points gives the same float32 numbers, so tiles rendered apart agree exactly. Positions and
spacings are in micrometres.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vstain.synth.hashing import stream_key, uniform

#: A function of integer lattice coordinates (broadcastable int64 arrays) giving float32 values.
#: Called with a row (1, nx) and a column (ny, 1) it must return what it returns elementwise.
LatticeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Standard deviation of a B-spline with lattice values uniform in [-1, 1], averaged over
#: positions: sqrt(1/3) x 151/315 (151/315 is the mean of the sum of squared cubic B-spline
#: weights). Noise lattices are divided by it so that noise has unit variance.
_RAW_STD = float(np.sqrt(1.0 / 3.0) * 151.0 / 315.0)


def smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a cubic ramp between."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _taps(pos: np.ndarray, spacing: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """First of the four lattice indices around each position, and the four B-spline weights."""
    t = np.asarray(pos, dtype=np.float64) / spacing
    i = np.floor(t)
    f = (t - i).astype(np.float32)
    g = 1 - f
    f2 = f * f
    f3 = f2 * f
    sixth = np.float32(1 / 6)
    weights = [
        g * g * g * sixth,
        (3 * f3 - 6 * f2 + 4) * sixth,
        (-3 * f3 + 3 * f2 + 3 * f + 1) * sixth,
        f3 * sixth,
    ]
    return i.astype(np.int64) - 1, weights


def bspline_grid(lattice: LatticeFn, xs: np.ndarray, ys: np.ndarray, spacing: float) -> np.ndarray:
    """The field on the grid ``ys x xs`` (1-D positions), float32 of shape (ny, nx)."""
    ix, wx = _taps(xs, spacing)
    iy, wy = _taps(ys, spacing)
    gx = np.arange(ix.min(), ix.max() + 4)
    gy = np.arange(iy.min(), iy.max() + 4)
    lat = lattice(gx[None, :], gy[:, None])
    cols = ix - gx[0]
    rows_x = lat[:, cols] * wx[0]
    for k in range(1, 4):
        rows_x += lat[:, cols + k] * wx[k]
    rows = iy - gy[0]
    out = np.take(rows_x, rows, axis=0)
    out *= wy[0][:, None]
    term = np.empty_like(out)  # reused: the full-size pass dominates the cost
    for k in range(1, 4):
        np.take(rows_x, rows + k, axis=0, out=term)
        term *= wy[k][:, None]
        out += term
    return out


def bspline_points(lattice: LatticeFn, x: np.ndarray, y: np.ndarray, spacing: float) -> np.ndarray:
    """The field at scattered points (x and y broadcast together), float32.

    When the points are dense, lattice values are computed once on their bounding lattice grid.
    """
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    if x.size == 0:
        return np.zeros(x.shape, np.float32)
    ix, wx = _taps(x, spacing)
    iy, wy = _taps(y, spacing)
    # The 4 x 4 lattice points around each point: axis -2 is y, axis -1 is x.
    tx = ix[..., None, None] + np.arange(4)
    ty = iy[..., None, None] + np.arange(4)[:, None]
    gx0, gy0 = ix.min(), iy.min()
    nx, ny = ix.max() + 4 - gx0, iy.max() + 4 - gy0
    if nx * ny <= 16 * x.size + 256:  # dense points: compute the lattice once, then gather
        lat = lattice(np.arange(gx0, gx0 + nx)[None, :], np.arange(gy0, gy0 + ny)[:, None])
        values = lat[ty - gy0, tx - gx0]
    else:
        values = lattice(*np.broadcast_arrays(tx, ty))
    out = None
    for k in range(4):
        row = values[..., k, 0] * wx[0]
        for m in range(1, 4):
            row += values[..., k, m] * wx[m]
        out = row * wy[0] if out is None else out + row * wy[k]
    return out


def hashed_lattice(key: int) -> LatticeFn:
    """Value-noise lattice: uniform in [-1, 1] divided by ``_RAW_STD`` (unit-variance noise)."""

    def values(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return ((2 * uniform(key, gx, gy) - 1) / _RAW_STD).astype(np.float32)

    return values


def sampled_lattice(
    field: Callable[[np.ndarray, np.ndarray], np.ndarray], spacing: float
) -> LatticeFn:
    """Lattice of the values of ``field(x, y)`` (micrometres) at the lattice points."""

    def values(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return field(gx * spacing, gy * spacing)

    return values


def fractal_lattice(key: int, spacing: float, octaves: int) -> tuple[LatticeFn, float]:
    """Lattice (and its spacing) of fractal noise: octaves at spacing, spacing / 2, ...

    The finest octave is value noise on the lattice itself; coarser octaves are B-spline noise
    sampled at the lattice points. Octave weights halve and sum to unit variance.
    """
    amps = [0.5**o for o in range(octaves)]
    norm = float(np.sqrt(np.sum(np.square(amps))))
    finest = spacing / 2 ** (octaves - 1)
    coarse = [
        (hashed_lattice(stream_key(key, o)), spacing / 2**o, np.float32(a / norm))
        for o, a in enumerate(amps[:-1])
    ]
    last = hashed_lattice(stream_key(key, octaves - 1))
    last_amp = np.float32(amps[-1] / norm)

    def values(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        out = last_amp * last(gx, gy)
        for lattice, s, a in coarse:
            out += a * evaluate(lattice, gx * finest, gy * finest, s)
        return out

    return values, finest


def evaluate(lattice: LatticeFn, x: np.ndarray, y: np.ndarray, spacing: float) -> np.ndarray:
    """A field at a grid (x a row (1, nx), y a column (ny, 1)) or at points (any shapes)."""
    if x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1:
        return bspline_grid(lattice, x[0], y[:, 0], spacing)
    return bspline_points(lattice, x, y, spacing)


@dataclass(frozen=True)
class GridSampler:
    """Named fields of a slide on the pixel grid ``ys x xs`` (micrometres)."""

    seed: int
    xs: np.ndarray
    ys: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    def field(self, lattice: LatticeFn, spacing: float) -> np.ndarray:
        return bspline_grid(lattice, self.xs, self.ys, spacing)

    def noise(self, name: str, spacing: float, octaves: int = 1) -> np.ndarray:
        """The slide's fractal noise ``name`` (about unit variance) on the grid."""
        return self.field(*fractal_lattice(stream_key(self.seed, name), spacing, octaves))


@dataclass(frozen=True)
class PointSampler:
    """Named fields of a slide at scattered points (micrometres); same values as on the grid."""

    seed: int
    x: np.ndarray
    y: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return np.broadcast_shapes(np.shape(self.x), np.shape(self.y))

    def field(self, lattice: LatticeFn, spacing: float) -> np.ndarray:
        return bspline_points(lattice, self.x, self.y, spacing)

    def noise(self, name: str, spacing: float, octaves: int = 1) -> np.ndarray:
        """The slide's fractal noise ``name`` (about unit variance) at the points."""
        return self.field(*fractal_lattice(stream_key(self.seed, name), spacing, octaves))
