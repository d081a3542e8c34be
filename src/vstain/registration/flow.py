"""Local refinement: dense TV-L1 optical flow of hematoxylin, kept as a coarse displacement field.

The IHC hematoxylin is resampled onto the H&E grid of a level with longer side about
``FLOW_SIDE`` through the affine map, TV-L1 flow (scikit-image), on overlapping tiles, finds where
each H&E pixel lies in it, the flow is smoothed over tissue (normalised Gaussian convolution:
glass carries no information) and block-averaged to a grid of ``GRID`` flow-level px.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.filters import window
from skimage.registration import optical_flow_tvl1

from vstain.io.slide import Slide
from vstain.registration.errors import RegistrationError
from vstain.registration.field import DisplacementField
from vstain.registration.refine import apply
from vstain.registration.sampling import hematoxylin_through, slide_hematoxylin

FLOW_SIDE = 768  # longer side (px) of the H&E level the flow is computed on
GRID = 6  # flow-level px per node of the stored field
SMOOTH = 4.5  # Gaussian sigma (flow-level px) of the smoothing over tissue
TILE, OVERLAP = 128, 32  # flow-level px of the tiles the flow is computed on
TISSUE_H = 0.05  # hematoxylin OD above which a (blurred) pixel counts as tissue


def flow_factor(he: Slide, side: int = FLOW_SIDE) -> int:
    """Block-average factor of the H&E level the flow is computed on."""
    return max(1, round(max(he.shape) / side))


def _normalised(h: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Hematoxylin lightly blurred and divided by its 99th percentile (stains differ in gain)."""
    top = float(np.percentile(h if valid is None else h[valid], 99))
    return ndimage.gaussian_filter(h / max(top, 1e-6), 1.0)


def _starts(n: int) -> list[int]:
    """Starts of ``TILE``-px tiles overlapping by ``OVERLAP`` px that cover ``n`` px."""
    if n <= TILE:
        return [0]
    step = TILE - OVERLAP
    return sorted({min(s, n - TILE) for s in range(0, n - OVERLAP, step)})


def tiled_flow(ref: np.ndarray, mov: np.ndarray) -> np.ndarray:
    """TV-L1 flow (2, H, W: rows, columns) of ``mov`` to ``ref``, tile by tile, feathered.

    A tile's coarse-to-fine pyramid starts at a few px, so no tile can lock onto tissue further
    away than about its own size: local refinement stays local.
    """
    flow = np.zeros((2, *ref.shape))
    total = np.zeros(ref.shape)
    for y in _starts(ref.shape[0]):
        for x in _starts(ref.shape[1]):
            box = np.s_[y : y + TILE, x : x + TILE]
            v = optical_flow_tvl1(ref[box], mov[box])
            feather = window("hann", v.shape[1:]) + 1e-3
            flow[(slice(None), *box)] += v * feather
            total[box] += feather
    return flow / total


def _smooth(v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Gaussian average of ``v`` weighted by ``weight``; 0 far from any weight."""
    num = ndimage.gaussian_filter(v * weight, SMOOTH)
    den = ndimage.gaussian_filter(weight, SMOOTH)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)


def _blocks(a: np.ndarray) -> np.ndarray:
    rows, cols = a.shape[0] // GRID, a.shape[1] // GRID
    return a[: rows * GRID, : cols * GRID].reshape(rows, GRID, cols, GRID).mean(axis=(1, 3))


def flow_field(he: Slide, ihc: Slide, m: np.ndarray, side: int = FLOW_SIDE) -> DisplacementField:
    """Displacement field that, before ``m``, moves H&E points onto their IHC tissue."""
    f = flow_factor(he, side)
    ref = slide_hematoxylin(he, f)
    scale = f * math.sqrt(abs(np.linalg.det(m[:2, :2])))
    mov, valid = hematoxylin_through(ihc, lambda xy: apply(m, xy), ref.shape, f, scale)
    if valid.sum() < 100:
        raise RegistrationError(
            "The IHC does not overlap the H&E under the affine map; check the registration's "
            "quality before asking for local refinement."
        )
    ref_n, mov_n = _normalised(ref), _normalised(mov, valid)
    v_rows, v_cols = tiled_flow(ref_n, mov_n)
    tissue = ndimage.gaussian_filter(ref, 1.0) > TISSUE_H
    weight = (tissue & valid).astype(np.float64)
    dx, dy = (f * _blocks(_smooth(v, weight)) for v in (v_cols, v_rows))
    return DisplacementField(float(f * GRID), dx.astype(np.float32), dy.astype(np.float32))
