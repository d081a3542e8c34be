"""Vectorised rasterisation of many ellipses into an instance label image.

Ellipses are evaluated on small square stamps around their centres, all ellipses of a size class
at once; where ellipses overlap, the larger id wins (a global rule, so tiles agree). Stamp pixel
offsets are computed from global pixel indices, so results do not depend on the region's origin.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: Stamp sides (pixels); each ellipse uses the smallest that holds it.
_SIDES = (7, 11, 15, 21, 29, 41, 57, 81, 113, 161)
#: Ellipses processed per batch (bounds the memory of the stamp arrays).
_BATCH = 4096


@dataclass(frozen=True)
class Ellipses:
    """Ellipses in global pixel coordinates: centre, semi-axes (a along theta), outline wobble."""

    id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    wobble: np.ndarray  # (n, 4): cos 2, sin 2, cos 3, sin 3 harmonics of the outline


def _normalised_radius(e: Ellipses, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Radius in units of the (wobbly) outline: < 1 inside. dx, dy are (n, k, k)."""

    def column(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)[:, None, None]

    c, s = column(np.cos(e.theta)), column(np.sin(e.theta))
    u = (dx * c + dy * s) / column(e.a)
    v = (-dx * s + dy * c) / column(e.b)
    r2 = np.maximum(u * u + v * v, np.float32(1e-12))
    r = np.sqrt(r2)
    w = e.wobble.astype(np.float32)[:, :, None, None]
    shape = (
        1.0
        + w[:, 0] * (u * u - v * v) / r2
        + w[:, 1] * 2 * u * v / r2
        + w[:, 2] * (u * u * u - 3 * u * v * v) / (r2 * r)
        + w[:, 3] * (3 * u * u * v - v * v * v) / (r2 * r)
    )
    return r / shape


def rasterise(
    e: Ellipses, x0: int, y0: int, h: int, w: int, edge: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32, 0 = none) and normalised radius (float32, inf = none) of the region.

    Pixels are covered out to ``1 + edge / b`` (half a pixel past the outline across the minor
    axis) so callers can anti-alias; labels there are kept and callers threshold the radius at 1.
    """
    labels = np.zeros(h * w, np.int32)
    radius = np.full(h * w, np.inf, np.float32)
    if len(e.id) == 0:
        return labels.reshape(h, w), radius.reshape(h, w)
    extent = np.maximum(e.a, e.b) * (1 + np.abs(e.wobble).sum(axis=1)) + edge + 1
    side_index = np.searchsorted(_SIDES, 2 * np.ceil(extent) + 1)
    if side_index.max() >= len(_SIDES):
        raise ValueError("ellipse too large for the stamp sizes")
    hits = []
    for k, side in enumerate(_SIDES):
        members = np.flatnonzero(side_index == k)
        for start in range(0, len(members), _BATCH):
            hits.append(_stamp(_take(e, members[start : start + _BATCH]), side, x0, y0, h, w, edge))
    flat = np.concatenate([hit[0] for hit in hits])
    ids = np.concatenate([hit[1] for hit in hits])
    rad = np.concatenate([hit[2] for hit in hits])
    np.maximum.at(labels, flat, ids)
    won = labels[flat] == ids
    radius[flat[won]] = rad[won]
    return labels.reshape(h, w), radius.reshape(h, w)


def _take(e: Ellipses, index: np.ndarray) -> Ellipses:
    return Ellipses(*(getattr(e, f.name)[index] for f in fields(e)))


def _stamp(
    e: Ellipses, side: int, x0: int, y0: int, h: int, w: int, edge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat region indices, ids and normalised radii of the pixels the ellipses cover."""
    offsets = np.arange(side) - side // 2
    gx = np.floor(e.x).astype(np.int64)[:, None] + offsets  # global pixel columns (n, side)
    gy = np.floor(e.y).astype(np.int64)[:, None] + offsets
    dx = (gx - e.x[:, None]).astype(np.float32)[:, None, :]
    dy = (gy - e.y[:, None]).astype(np.float32)[:, :, None]
    r = _normalised_radius(e, dx, dy)
    inside = r < 1.0 + edge / np.minimum(e.a, e.b)[:, None, None]
    col = (gx - x0)[:, None, :]
    row = (gy - y0)[:, :, None]
    inside &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
    n_, iy, ix = np.nonzero(inside)
    flat = (gy[n_, iy] - y0) * w + (gx[n_, ix] - x0)
    return flat, e.id[n_].astype(np.int32), r[inside]
