"""What a model paints on glass. Tiles without tissue are not computed but written as background;
written as pure white they leave a tile-shaped step wherever the model paints glass off-white
(a real Aperio slide: 13-19 grey levels). So the model is run once on a window of the slide's
own glass, and background tiles get the median colour it painted there."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vstain.io import Slide
from vstain.pipeline.loaded_model import LoadedModel
from vstain.tiles.grid import read_window
from vstain.tiles.job import slide_tissue_mask
from vstain.tiles.tissue import pick_mask_level


def glass_window(slide: Slide, level: int, size: int) -> tuple[np.ndarray, str] | None:
    """A ``size`` x ``size`` RGB window of ``slide``'s glass at ``level`` and where it is from:
    the place farthest from tissue when a window fits there, else a uniform window of the
    slide's median glass colour; None when the slide shows no glass at all."""
    mask = slide_tissue_mask(slide)
    if mask.all():
        return None
    array = slide.levels[level]
    height, width = array.shape[:2]
    sy, sx = height / mask.shape[0], width / mask.shape[1]
    clearance = ndi.distance_transform_edt(np.pad(~mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(np.argmax(clearance), mask.shape)
    if clearance[row, col] * min(sy, sx) >= size * 0.71:  # the whole square lies on glass
        y = int(np.clip(round(row * sy) - size // 2, 0, max(height - size, 0)))
        x = int(np.clip(round(col * sx) - size // 2, 0, max(width - size, 0)))
        return read_window(array, (x, y, x + size, y + size)), f"glass window at x={x}, y={y}"
    thumbnail = np.asarray(slide.levels[pick_mask_level([a.shape for a in slide.levels])])
    colour = np.median(thumbnail[~mask], axis=0).astype(np.uint8)
    return np.broadcast_to(colour, (size, size, 3)).copy(), f"uniform glass {colour.tolist()}"


def glass_colour(
    loaded: LoadedModel,
    window: np.ndarray,
    halo: int,
    options: dict | None = None,
    normaliser=None,
) -> tuple[float, float, float]:
    """The median RGB (in [0, 1]) ``loaded`` paints on the core of glass ``window`` (as the run
    will: with its ``options`` and ``normaliser``)."""
    ihc = loaded.tile_function(options, normaliser)(window[None], [(0, 0)])["ihc"][0]
    ihc = ihc / np.float32(255) if ihc.dtype == np.uint8 else ihc
    core = ihc[:, halo : ihc.shape[1] - halo, halo : ihc.shape[2] - halo]
    return tuple(float(v) for v in np.median(core.reshape(3, -1), axis=1))
