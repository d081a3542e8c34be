"""Pyramidal OME-TIFF writer: tiled RGB, levels in SubIFDs, written tile by tile.

The pyramid is first written to a temporary OME-Zarr store (levels computed chunk by chunk, see
`vstain.io.ome_zarr`), then copied tile by tile into a TIFF under a temporary name, which replaces
the output only when complete. Both temporaries live in a hidden folder next to the output (same
file system, so the final `os.replace` is atomic) that is removed in every case.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
import zarr

from vstain.errors import SlideError
from vstain.io.ome_zarr import pyramid_plan, write_pyramid
from vstain.io.writing import (
    ImageLike,
    Progress,
    ProgressCallback,
    as_levels,
    check_output,
    chunk_count,
)

#: Above this many uncompressed bytes (all levels) the file is written as BigTIFF.
BIGTIFF_ABOVE = 2**31
#: The Software tag of every TIFF vstain writes: only such files are ever replaced by --overwrite.
SOFTWARE = "vstain"


def write_ome_tiff(
    image: ImageLike,
    path: str | Path,
    *,
    pixel_size: float | None = None,
    tile: int = 512,
    compression: Literal["jpeg", "deflate"] = "jpeg",
    quality: int = 90,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a slide (a `Slide`, a list of (Y, X, 3) uint8 levels, or one array) as OME-TIFF.

    Levels below the coarsest given one are computed down to a longer side of at most 256 px.
    ``compression`` "jpeg" (lossy, ``quality`` 1-100) or "deflate" (lossless); ``tile`` a
    multiple of 16. ``progress(done, total)`` counts pyramid chunks and then TIFF tiles.
    Returns the path written.
    """
    path = Path(path)
    check_output(path, overwrite)
    if compression not in ("jpeg", "deflate"):
        raise SlideError(f"Unknown compression {compression!r} for {path}: use jpeg or deflate.")
    if tile < 16 or tile % 16:
        raise SlideError(f"TIFF tile size must be a multiple of 16, got {tile} (writing {path}).")
    levels, pixel_size = as_levels(image, pixel_size)
    shapes, factors = pyramid_plan(levels)
    counter = Progress(2 * sum(chunk_count(s, tile) for s in shapes), progress)
    work = partial_folder(path)
    shutil.rmtree(work, ignore_errors=True)  # left by a killed earlier attempt
    work.mkdir()
    try:
        arrays = write_pyramid(levels, work / "pyramid.zarr", tile, pixel_size, False, counter)
        partial = work / path.name
        _write_tiff(arrays, factors, partial, pixel_size, tile, compression, quality, counter)
        os.replace(partial, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def partial_folder(path: Path) -> Path:
    """Where the OME-TIFF ``path`` is built before it replaces ``path`` (one name per output, so
    the next attempt removes what a killed one left)."""
    return path.with_name(f".{path.name}.partial")


def _write_tiff(
    arrays: list[zarr.Array],
    factors: list[tuple[float, float]],
    path: Path,
    pixel_size: float | None,
    tile: int,
    compression: str,
    quality: int,
    counter: Progress,
) -> None:
    """Write (C, Y, X) level arrays as one OME image with its levels in SubIFDs."""
    options = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "compressionargs": {"level": quality} if compression == "jpeg" else {},
    }
    raw_bytes = sum(int(np.prod(a.shape)) for a in arrays)
    with tifffile.TiffWriter(path, bigtiff=raw_bytes > BIGTIFF_ABOVE, ome=True) as tiff:
        for k, (array, (fy, fx)) in enumerate(zip(arrays, factors, strict=True)):
            if k == 0:  # the full-resolution image holds the OME-XML and the SubIFD slots
                placement = {
                    "subifds": len(arrays) - 1,
                    "metadata": _ome_metadata(pixel_size),
                    "software": SOFTWARE,
                }
            else:
                placement = {"subfiletype": 1, "metadata": None}
            tiff.write(
                _tiles(array, tile, counter),
                shape=(*array.shape[1:], 3),
                **placement,
                **options,
                **_resolution(pixel_size, fy, fx),
            )


def _tiles(array: zarr.Array, tile: int, counter: Progress) -> Iterator[np.ndarray]:
    """(tile, tile, C) tiles of a (C, Y, X) array in row-major order (edge tiles are smaller).

    Each tile is counted when handed to tifffile, which does not ask again after the last one.
    """
    _, height, width = array.shape
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            block = np.moveaxis(array[:, y0 : y0 + tile, x0 : x0 + tile], 0, -1)
            counter.step()
            yield block


def _ome_metadata(pixel_size: float | None) -> dict:
    if pixel_size is None:
        return {"axes": "YXS"}
    return {
        "axes": "YXS",
        "PhysicalSizeX": pixel_size,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": pixel_size,
        "PhysicalSizeYUnit": "µm",
    }


def _resolution(pixel_size: float | None, fy: float, fx: float) -> dict:
    """TIFF resolution tags (pixels per centimetre) of a level downsampled by (fy, fx)."""
    if pixel_size is None:
        return {}
    return {
        "resolution": (1e4 / (pixel_size * fx), 1e4 / (pixel_size * fy)),
        "resolutionunit": "CENTIMETER",
    }


def written_by_vstain(path) -> bool:
    """Whether TIFF ``path`` is an OME-TIFF vstain wrote (its first page names vstain)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages.first.software == SOFTWARE
    except Exception:  # unreadable or not a TIFF: not ours
        return False
