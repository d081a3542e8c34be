"""RGB inputs of the stain-optics layer: arrays or a Slide level, optionally masked and sampled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vstain.errors import StainError

if TYPE_CHECKING:
    from vstain.io.slide import Slide


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Return ``rgb`` as an array of shape (..., 3), or raise StainError."""
    rgb = np.asarray(rgb)
    if rgb.ndim < 2 or rgb.shape[-1] != 3:
        raise StainError(
            f"Expected an RGB image of shape (height, width, 3), got shape {rgb.shape}. "
            "Convert the image to RGB (drop alpha, expand grey) first."
        )
    return rgb


def image_array(image: np.ndarray | Slide, level: int = -1) -> np.ndarray:
    """The RGB pixels of an array, or of one level of a Slide (the coarsest by default)."""
    if hasattr(image, "levels"):  # a Slide; not imported, so vstain.color does not load vstain.io
        return check_rgb(np.asarray(image.levels[level]))
    return check_rgb(image)


def check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return ``mask`` as bool if it matches the image ``shape`` (Y, X), else raise StainError."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise StainError(
            f"The mask has shape {mask.shape} but the image has shape {tuple(shape)}. "
            "Give a mask of the same height and width as the image (or Slide level) it selects."
        )
    return mask


def sample_pixels(
    image: np.ndarray | Slide,
    mask: np.ndarray | None = None,
    *,
    level: int = -1,
    max_pixels: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """RGB pixels (N, 3) of ``image`` inside ``mask``; a random subset when over ``max_pixels``.

    The subset is drawn without replacement by ``numpy.random.default_rng(seed)``.
    """
    rgb = image_array(image, level)
    mask = check_mask(mask, rgb.shape[:-1])
    pixels = rgb.reshape(-1, 3) if mask is None else rgb[mask]
    if max_pixels is not None and len(pixels) > max_pixels:
        pick = np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)
        pixels = pixels[np.sort(pick)]
    return pixels
