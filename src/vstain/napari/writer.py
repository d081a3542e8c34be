"""npe2 writer: an RGB(A) image layer (e.g. the virtual IHC) to OME-Zarr or pyramidal OME-TIFF.

Both go tile by tile through `vstain.io`'s writers; pixels not computed yet (alpha 0) are written
as white glass.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from vstain.errors import SlideError
from vstain.io import write_ome_tiff, write_ome_zarr

TIFF_SUFFIXES = (".tif", ".tiff")
MICROMETRE = "micrometer"


def over_white(level) -> da.Array:
    """(Y, X, 3) uint8 of a (Y, X, 3 or 4) uint8 level, RGBA composited over white."""
    level = da.asarray(level)
    if level.ndim != 3 or level.shape[-1] != 4 or level.dtype != np.uint8:
        return level
    rgb, alpha = level[..., :3].astype(np.uint16), level[..., 3:].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def layer_pixel_size(meta: dict) -> float | None:
    """Micrometres per pixel of the layer's level 0, when its x axis is in micrometres."""
    units = meta.get("units")
    if not units or str(units[-1]) != MICROMETRE:
        return None
    return float(meta["scale"][-1])


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write one image layer to ``path`` (``.zarr``: OME-Zarr; ``.tif`` / ``.tiff``: OME-TIFF)."""
    path = Path(path)
    levels = [over_white(level) for level in (data if meta.get("multiscale") else [data])]
    pixel_size = layer_pixel_size(meta)
    name = path.name.lower()
    if name.endswith(".zarr"):
        write_ome_zarr(levels, path, pixel_size=pixel_size)
    elif name.endswith(TIFF_SUFFIXES):
        write_ome_tiff(levels, path, pixel_size=pixel_size)
    else:
        raise SlideError(
            f"Cannot write {path.name}: vstain writes OME-Zarr (.zarr) or OME-TIFF (.ome.tif). "
            "Choose one of these extensions."
        )
    return [str(path)]
