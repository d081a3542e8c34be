"""Decoding one TIFF tile directly, for readers that slice a slide tile by tile (the tile engine).

A slide level is a dask array; asking it for one chunk costs about 5 ms of graph building and
scheduling (holding the GIL) around a 0.6 ms JPEG decode of a 512 px tile. `TiffTiles` reads the
tile's bytes with ``os.pread`` (thread-safe) and decodes them with tifffile's own decoder (the one
the dask path ends in, so the pixels are the same), which releases the GIL: tiles decode in
parallel on reader threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from tifffile import PHOTOMETRIC, PLANARCONFIG

from vstain.errors import SlideError
from vstain.io.slide import Slide

RGB_PHOTOMETRICS = (PHOTOMETRIC.RGB, PHOTOMETRIC.YCBCR)


class TiffTiles:
    """Tiles of one pyramid level of a tiled RGB uint8 TIFF, by tile row and column."""

    def __init__(self, path: Path, page, keyframe):
        self.path = Path(path)
        self.page, self.keyframe = page, keyframe
        self.shape = (*keyframe.shape[:2], 3)
        self.tile = (keyframe.tilelength, keyframe.tilewidth)
        self.chunks = tuple(
            (t,) * (n // t) + ((n % t,) if n % t else ())
            for n, t in zip(self.shape[:2], self.tile, strict=True)
        )
        self.across = len(self.chunks[1])
        self._args = {"_fullsize": True}
        if page.jpegtables is not None:
            self._args["jpegtables"] = page.jpegtables
        if keyframe.jpegheader is not None:
            self._args["jpegheader"] = keyframe.jpegheader
        self._decode = keyframe.decode
        self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for os.pread

    def __del__(self):
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def read(self, i: int, j: int) -> np.ndarray:
        """Tile (i, j) as (h, w, 3) uint8, cut to the image."""
        index = i * self.across + j
        offset, count = self.page.dataoffsets[index], self.page.databytecounts[index]
        try:
            data = os.pread(self._file.fileno(), count, offset)
            tile = self._decode(data, index, **self._args)[0]
        except Exception as e:
            raise SlideError(
                f"Cannot decode pixels of {self.path}: {type(e).__name__}: {e}. The file is "
                "corrupt or truncated; copy or export it again."
            ) from e
        h, w = self.chunks[0][i], self.chunks[1][j]
        return tile.reshape(*self.tile, -1)[:h, :w, :3]


def tiff_tiles(slide: Slide, level: int) -> TiffTiles | None:
    """Direct tile reader of ``slide``'s ``level`` when it is a tiled RGB uint8 TIFF level whose
    tiles are the dask array's chunks; None for anything else (read those through dask)."""
    array = slide.levels[level]
    try:
        tif = tifffile.TiffFile(slide.path)
    except Exception:
        return None
    try:
        series = tif.series[0]
        pages = series.levels[level].pages
        keyframe = series.levels[level].keyframe
        if (
            len(pages) != 1
            or not keyframe.is_tiled
            or keyframe.imagedepth != 1
            or keyframe.dtype != np.uint8
            or keyframe.photometric not in RGB_PHOTOMETRICS
            or keyframe.planarconfig != PLANARCONFIG.CONTIG
            or keyframe.samplesperpixel < 3
            or 0 in pages[0].databytecounts
        ):
            return None
        tiles = TiffTiles(slide.path, pages[0], keyframe)
    except Exception:
        return None
    finally:
        tif.close()  # decoding needs only the pages' offsets and tables, read by now
    if tiles.shape != tuple(array.shape) or tiles.chunks != tuple(array.chunks[:2]):
        return None
    return tiles
