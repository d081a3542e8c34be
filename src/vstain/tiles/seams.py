"""Seam metric: do tile borders show up in a stitched image?"""

from __future__ import annotations

import numpy as np


def seam_metric(image: np.ndarray, tile: int) -> float:
    """Mean gradient across tile borders / mean gradient inside tiles, of a (Y, X[, C]) image.

    1.0 means borders are indistinguishable from the rest; seams make it larger.
    """
    img = np.asarray(image, np.float32)
    img = img[..., None] if img.ndim == 2 else img
    gx = np.abs(np.diff(img, axis=1)).mean(axis=-1)  # between columns x and x + 1
    gy = np.abs(np.diff(img, axis=0)).mean(axis=-1)
    bx = np.zeros(gx.shape[1], bool)
    bx[tile - 1 :: tile] = True
    by = np.zeros(gy.shape[0], bool)
    by[tile - 1 :: tile] = True
    border = np.concatenate([gx[:, bx].ravel(), gy[by].ravel()])
    inside = np.concatenate([gx[:, ~bx].ravel(), gy[~by].ravel()])
    if border.size == 0:
        raise ValueError(f"image {img.shape[:2]} has no tile border for tile size {tile}")
    return float(border.mean() / max(inside.mean(), 1e-12))
