"""Reading slides for registration: block-averaged regions, hematoxylin, and warped samples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from vstain.color import rgb_to_concentrations
from vstain.io.slide import Slide


def block_centres(f: float) -> np.ndarray:
    """Map a pixel of an ``f``-times block-averaged image to level-0 pixels (3 x 3, x/y)."""
    return np.array([[f, 0, (f - 1) / 2], [0, f, (f - 1) / 2], [0, 0, 1]], float)


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin concentration (OD units, >= 0) of an RGB image, float32 (H, W)."""
    rgb = np.clip(np.asarray(rgb, np.float32), 1, 255).astype(np.uint8)
    return np.clip(rgb_to_concentrations(rgb)[..., 0], 0, None).astype(np.float32)


def slide_hematoxylin(slide: Slide, f: int) -> np.ndarray:
    """Hematoxylin of the whole of level 0 block-averaged by ``f``."""
    lvl = slide.levels[0]
    h, w = (lvl.shape[0] // f) * f, (lvl.shape[1] // f) * f
    rgb = lvl[:h, :w].astype(np.float32).reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
    return hematoxylin(np.asarray(rgb.compute()))


def read_block(slide: Slide, x0: int, y0: int, w: int, h: int, f: int) -> np.ndarray:
    """Level-0 region (x0, y0, w * f, h * f) block-averaged by ``f``, float32 (h, w, 3).

    Parts outside the slide are white.
    """
    sh, sw = slide.shape
    out = np.full((h * f, w * f, 3), 255, np.float32)
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + w * f, sw), min(y0 + h * f, sh)
    if ax1 > ax0 and ay1 > ay0:
        part = slide.levels[0][ay0:ay1, ax0:ax1]
        out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = np.asarray(part)
    return out.reshape(h, f, w, f, 3).mean(axis=(1, 3))


def _pick_level(slide: Slide, scale: float) -> int:
    """The coarsest level whose downsample is at most ``scale`` (level-0 px per sample)."""
    fits = [i for i, d in enumerate(slide.downsamples) if d <= max(scale, 1.0) * (1 + 1e-6)]
    return max(fits, key=lambda i: slide.downsamples[i])


def sample(slide: Slide, xy: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear RGB samples of ``slide`` at level-0 (x, y) positions ``xy`` (..., 2).

    ``scale`` is the spacing of the samples in level-0 pixels: they are read from the level
    closest to it, block-averaged to it, so a coarse sampling does not alias. Returns the samples
    (..., 3) uint8, white outside the slide, and a bool mask (...) of samples on the slide.
    """
    level = _pick_level(slide, scale)
    ds = slide.downsamples[level]
    f = max(1, int(scale / ds))
    arr = slide.levels[level]
    bh, bw = arr.shape[0] // f, arr.shape[1] // f
    g = (np.asarray(xy, float) - (ds * f - 1) / 2) / (ds * f)  # in block-averaged pixels
    valid = (g[..., 0] >= -0.5) & (g[..., 0] <= bw - 0.5) & (g[..., 1] >= -0.5)
    valid &= g[..., 1] <= bh - 0.5
    out = np.full((*g.shape[:-1], 3), 255, np.uint8)
    if not valid.any():
        return out, valid
    x0, y0 = np.floor(g[valid].min(0)).astype(int) - 1
    x1, y1 = np.ceil(g[valid].max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, bw), min(y1, bh)
    part = arr[y0 * f : y1 * f, x0 * f : x1 * f].astype(np.float32)  # lazy: averaged by chunk
    part = np.asarray(part.reshape(y1 - y0, f, x1 - x0, f, 3).mean(axis=(1, 3)))
    coords = [g[..., 1] - y0, g[..., 0] - x0]
    for c in range(3):
        values = ndimage.map_coordinates(part[..., c], coords, order=1, mode="nearest")
        out[..., c] = np.clip(np.round(values), 0, 255).astype(np.uint8)
    out[~valid] = 255
    return out, valid


def hematoxylin_through(
    ihc: Slide,
    to_ihc: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int],
    f: int,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """IHC hematoxylin on the H&E grid block-averaged by ``f``, and the (h, w) coverage mask.

    ``to_ihc`` maps (..., 2) H&E level-0 points to IHC level-0 points; ``scale`` is the IHC
    level-0 spacing of the samples (see ``sample``).
    """
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    he0 = np.stack([xs, ys], -1) * f + (f - 1) / 2  # block centres in level-0 px
    rgb, valid = sample(ihc, to_ihc(he0), scale)
    return hematoxylin(rgb), valid
