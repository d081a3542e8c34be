"""Stateless hashing: random numbers as pure functions of a key and integer coordinates.

Everything the simulator draws comes from here, so any tile of a slide can be rendered on its own
and agrees with its neighbours: a value depends on where it is, never on the order of drawing.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK64 = (1 << 64) - 1
# Odd 64-bit constants (golden ratio and two primes of xxHash) to spread each coordinate.
_COORD_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


def stream_key(seed: int, *names: str | int) -> int:
    """A stable 64-bit key for one random stream of a slide (blake2b of the seed and names)."""
    digest = hashlib.blake2b(repr((int(seed), *names)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_coords(key: int, *coords: np.ndarray | int) -> np.ndarray:
    """uint64 hash of ``key`` and up to three integer coordinate arrays (broadcast together)."""
    if not 1 <= len(coords) <= len(_COORD_MULTIPLIERS):
        raise ValueError("hash_coords takes one to three coordinate arrays")
    arrays = np.broadcast_arrays(*(np.asarray(c, dtype=np.int64) for c in coords))
    z = np.full(arrays[0].shape, key & _MASK64, dtype=np.uint64)
    for c, m in zip(arrays, _COORD_MULTIPLIERS, strict=False):
        z = _mix64(z + c.view(np.uint64) * np.uint64(m))
    return z


def uniform(key: int, *coords: np.ndarray | int) -> np.ndarray:
    """Uniform float64 in [0, 1) at integer coordinates."""
    return (hash_coords(key, *coords) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def rgb_noise(key: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance noise (float32, shape (..., 3)) at integer pixel positions.

    One hash per pixel gives each channel the sum of two 10-bit uniforms (a triangular
    distribution, bounded by 2.45 standard deviations): cheap enough for sensor noise over
    millions of pixels.
    """
    x, y = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(y, np.int64))
    h = hash_coords(key, (y << 32) + x)
    out = np.empty((*h.shape, 3), np.float32)
    ten = np.uint64(0x3FF)
    for c in range(3):
        a = (h >> np.uint64(20 * c)) & ten
        b = (h >> np.uint64(20 * c + 10)) & ten
        out[..., c] = a + b
    # Each 10-bit uniform has mean 511.5 and variance (1024**2 - 1) / 12.
    out -= np.float32(1023.0)
    out *= np.float32(1.0 / np.sqrt(2 * (1024.0**2 - 1) / 12))
    return out
