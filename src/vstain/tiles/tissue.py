"""Tissue detection on a low-resolution level, and the tissue fraction of each tile."""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import binary_closing
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects

from vstain.color.optics import OD_LUT, rgb_to_od

#: Otsu's threshold on saturation is clamped to this range: glass is below 0.04 even on yellowish
#: scanners, and pale tissue (fat, mucin, loose stroma) rarely exceeds 0.08, so a slide that is all
#: tissue or all glass is not split in two.
SATURATION_RANGE = (0.04, 0.08)
#: Mean optical density above which a pixel absorbs too much to be glass (intensity below ~222),
#: catching pale, grey-blue tissue whose saturation is low.
MIN_GLASS_FREE_OD = 0.06


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 thumbnail: saturation (Otsu) or optical density.

    Errs towards tissue: a tile wrongly kept costs compute, a tile wrongly dropped loses tissue.
    """
    rgb = np.asarray(thumbnail)
    sat = saturation(rgb)
    od = mean_od(rgb)
    # Very dark pixels (pen marks, dust, slide edges) have unstable saturation: ignore them.
    total = rgb[..., 0].astype(np.uint16) + rgb[..., 1] + rgb[..., 2]
    dark = total < 3 * 40  # a mean below 40
    try:
        t = threshold_otsu(sat[~dark]) if (~dark).any() else SATURATION_RANGE[1]
    except ValueError:  # constant image
        t = SATURATION_RANGE[1]
    mask = ((sat > np.clip(t, *SATURATION_RANGE)) | (od > MIN_GLASS_FREE_OD)) & ~dark
    mask = binary_closing(mask, disk(2), border_value=0)
    small = max(mask.size // 20000, 4)
    return remove_small_holes(remove_small_objects(mask, max_size=small), max_size=small)


@functools.cache
def _saturation_table() -> np.ndarray:
    """HSV saturation (scikit-image's, bit for bit) of each (max, min) pair of uint8 channels:
    saturation is (max - min) / max, so 65536 pixels give every value a thumbnail can have."""
    high, low = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    pixels = np.stack([high, low, np.minimum(high, low)], axis=-1).astype(np.uint8)
    return rgb2hsv(pixels)[..., 1]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of uint8 RGB pixels as `skimage.color.rgb2hsv` gives it, by table: ten
    times faster, since hue is not computed (the tissue mask of the first click, docs/napari.md)."""
    if rgb.dtype != np.uint8:
        return rgb2hsv(rgb)[..., 1]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # channel by channel: faster than axis=-1
    high = np.maximum(np.maximum(r, g), b).astype(np.intp)
    low = np.minimum(np.minimum(r, g), b)
    return np.take(_saturation_table(), (high << 8) | low)


def mean_od(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density of the three channels, equal to ``rgb_to_od(rgb).mean(axis=-1)``
    (float32, summed in the same order) without the reduction over the short last axis."""
    if rgb.dtype != np.uint8:
        return rgb_to_od(rgb).mean(axis=-1)
    return (OD_LUT[rgb[..., 0]] + OD_LUT[rgb[..., 1]] + OD_LUT[rgb[..., 2]]) / np.float32(3)


def pick_mask_level(level_shapes: list[tuple[int, ...]], max_side: int = 2048) -> int:
    """Index of the finest level whose longer side is at most ``max_side`` (else the coarsest)."""
    for i, shape in enumerate(level_shapes):
        if max(shape[:2]) <= max_side:
            return i
    return len(level_shapes) - 1


def tile_tissue_fraction(
    mask: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]
) -> float:
    """Fraction of tissue in ``box`` (x0, y0, x1, y1, in pixels of an image of ``shape``)."""
    my, mx = mask.shape
    sy, sx = my / shape[0], mx / shape[1]
    x0, y0, x1, y1 = box
    r0, r1 = int(np.floor(y0 * sy)), max(int(np.ceil(y1 * sy)), int(np.floor(y0 * sy)) + 1)
    c0, c1 = int(np.floor(x0 * sx)), max(int(np.ceil(x1 * sx)), int(np.floor(x0 * sx)) + 1)
    return float(mask[r0:r1, c0:c1].mean())
