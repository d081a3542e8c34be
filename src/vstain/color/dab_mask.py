"""Coarse masks of DAB-positive cells (as StainDiffuser builds them) and their signed distance.

The DAB map of an IHC image is thresholded at ``mean + k * std`` of the DAB map over a reference
region (the image itself, a tissue mask, or a whole slide through ``dab_threshold_stats``), then
cleaned: objects smaller than ``min_size`` pixels are removed and holes of at most ``max_hole``
pixels are filled. Optionally touching cells are split by a watershed on the distance transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import watershed

from vstain.color.dab import dab_od
from vstain.color.optics import HED, StainMatrix
from vstain.color.pixels import check_mask, check_rgb, sample_pixels
from vstain.errors import StainError

if TYPE_CHECKING:
    from vstain.io.slide import Slide

#: The coarse masks' parameters wherever vstain builds them (training data, StainDiffuser).
MASK_K, MASK_MIN_SIZE, MASK_MAX_HOLE = 2.0, 16, 64


@dataclass(frozen=True)
class DabStats:
    """Mean and standard deviation of the DAB map (OD units) over a reference region."""

    mean: float
    std: float

    @classmethod
    def of(cls, dab: np.ndarray) -> DabStats:
        """Statistics of DAB values; raise StainError if there are none."""
        if dab.size == 0:
            raise StainError("The mask selects no pixels: give a mask that contains tissue.")
        return cls(float(dab.mean()), float(dab.std()))

    def threshold(self, k: float) -> float:
        """The DAB threshold ``mean + k * std``."""
        return self.mean + k * self.std


def dab_threshold_stats(
    image: np.ndarray | Slide,
    *,
    stains: StainMatrix = HED,
    mask: np.ndarray | None = None,
    level: int = -1,
    max_pixels: int | None = 1_000_000,
    seed: int = 0,
) -> DabStats:
    """DAB mean and std over an RGB image or a Slide level, inside an optional tissue mask.

    Downsampled levels average neighbouring pixels, so their std is smaller than at full
    resolution: use the level closest to the resolution of the tiles to be masked.
    At most ``max_pixels`` pixels (drawn with ``seed``) are used; None uses all.
    """
    pixels = sample_pixels(image, mask, level=level, max_pixels=max_pixels, seed=seed)
    return DabStats.of(dab_od(pixels, stains))


def split_touching(mask: np.ndarray, min_distance: int = 5) -> np.ndarray:
    """Label image (int32) of ``mask`` with touching round objects split by a watershed.

    Markers are maxima of the distance transform at least ``min_distance`` pixels apart.
    """
    distance = ndi.distance_transform_edt(mask)
    labels, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=labels, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def coarse_dab_mask(
    rgb: np.ndarray,
    *,
    stains: StainMatrix = HED,
    k: float = MASK_K,
    min_size: int = MASK_MIN_SIZE,
    max_hole: int = MASK_MAX_HOLE,
    stats: DabStats | None = None,
    mask: np.ndarray | None = None,
    split: bool = False,
    min_distance: int = 5,
) -> np.ndarray:
    """Coarse mask of DAB-positive cells of an IHC image.

    Parameters
    ----------
    rgb
        IHC image (H, W, 3), uint8.
    k
        Threshold is ``mean + k * std`` of the DAB map.
    min_size
        Objects with fewer pixels are removed.
    max_hole
        Holes with at most this many pixels are filled.
    stats
        DAB statistics to threshold with (e.g. a whole slide's, for a tile). Default: computed
        over ``mask`` (or the whole image when ``mask`` is None).
    mask
        Tissue mask (H, W); also restricts the result. Ignored for statistics when ``stats`` given.
    split, min_distance
        If ``split``, return int32 labels with touching cells split (markers ``min_distance``
        apart); otherwise a bool mask.
    """
    rgb = check_rgb(rgb)
    region = check_mask(mask, rgb.shape[:-1])
    dab = dab_od(rgb, stains)
    if stats is None:
        stats = DabStats.of(dab if region is None else dab[region])
    positive = dab > stats.threshold(k)
    if region is not None:
        positive &= region
    positive = clean_mask(positive, min_size, max_hole)
    return split_touching(positive, min_distance) if split else positive


def clean_mask(positive: np.ndarray, min_size: int = 16, max_hole: int = 64) -> np.ndarray:
    """``positive`` without objects of fewer than ``min_size`` pixels and with holes of at most
    ``max_hole`` pixels filled."""
    positive = remove_small_objects(positive, max_size=max(min_size - 1, 0))
    return remove_small_holes(positive, max_size=max_hole)


def signed_distance(mask: np.ndarray, clip: float = 16.0) -> np.ndarray:
    """Signed distance to the mask boundary in pixels, clipped to ``clip``, scaled to [-1, 1].

    Inside pixels are positive (distance to the nearest outside pixel, so >= 1 px), outside
    pixels negative (minus the distance to the nearest inside pixel); no pixel is 0. Distances
    beyond ``clip`` are clipped, then everything is divided by ``clip``: an empty mask gives -1
    everywhere, a full one +1. Nonzero values of ``mask`` (e.g. labels) count as inside.
    """
    if clip <= 0:
        raise StainError(f"clip must be a positive number of pixels, got {clip}.")
    inside = np.asarray(mask) != 0
    if not inside.any():
        return np.full(inside.shape, -1.0, np.float32)
    if inside.all():
        return np.ones(inside.shape, np.float32)
    d = ndi.distance_transform_edt(inside) - ndi.distance_transform_edt(~inside)
    return (np.clip(d, -clip, clip) / clip).astype(np.float32)
