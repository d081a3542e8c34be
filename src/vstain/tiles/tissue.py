"""Tissue detection on a low-resolution level, and the tissue fraction of each tile."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_closing
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects

from vstain.color.optics import rgb_to_od

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
    sat = rgb2hsv(rgb)[..., 1]
    od = rgb_to_od(rgb).mean(axis=-1)
    # Very dark pixels (pen marks, dust, slide edges) have unstable saturation: ignore them.
    dark = rgb.mean(axis=-1) < 40
    try:
        t = threshold_otsu(sat[~dark]) if (~dark).any() else SATURATION_RANGE[1]
    except ValueError:  # constant image
        t = SATURATION_RANGE[1]
    mask = ((sat > np.clip(t, *SATURATION_RANGE)) | (od > MIN_GLASS_FREE_OD)) & ~dark
    mask = binary_closing(mask, disk(2), border_value=0)
    small = max(mask.size // 20000, 4)
    return remove_small_holes(remove_small_objects(mask, max_size=small), max_size=small)


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
