"""Verify a slide or image store tile by tile (`vstain info --check`).

Opening a slide checks its structure only; a tile whose bytes are damaged fails when it is read.
`check_slide` decodes every tile (zarr chunk) of the levels stored in the file, one at a time, and
lists the damaged ones. It also lists tiles that are not stored at all (TIFF tiles with offset or
byte count 0, zarr chunks without a file): readers return them as the fill value (0, black), which
is how sparse TIFFs and zarr stores leave out empty tiles, so they are reported, not refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import zarr

from vstain.errors import SlideError
from vstain.io.ome_zarr import open_ome_zarr_levels
from vstain.io.readers import MAGIC
from vstain.io.slide import Slide


@dataclass
class LevelCheck:
    """What decoding every tile of one stored level found; tiles are (row, column)."""

    level: int
    tiles: int
    missing: list[tuple[int, int]] = field(default_factory=list)
    damaged: list[tuple[tuple[int, int], str]] = field(default_factory=list)


def check_slide(
    slide: Slide, progress: Callable[[int, int], None] | None = None
) -> list[LevelCheck]:
    """Decode every tile of ``slide``'s stored levels (not the computed ones); ``progress(done,
    total)`` after each tile."""
    stored = slide.levels[: len(slide.levels) - slide.metadata.get("computed_levels", 0)]
    missing = _missing_tiles(slide, len(stored))
    total = sum(int(np.prod(level.numblocks)) for level in stored)
    done = 0
    report = []
    for k, level in enumerate(stored):
        rows, columns = level.numblocks[:2]
        result = LevelCheck(k, rows * columns, missing[k])
        for index in np.ndindex(*level.numblocks):
            try:
                level.blocks[index].compute()
            except SlideError as e:
                if index[:2] not in [tile for tile, _ in result.damaged]:
                    result.damaged.append((index[:2], str(e)))
            done += 1
            if progress is not None:
                progress(done, total)
        report.append(result)
    return report


def _missing_tiles(slide: Slide, n_levels: int) -> list[list[tuple[int, int]]]:
    """Per stored level, the tiles the file does not store (read as the fill value); none listed
    for formats other than TIFF and OME-Zarr."""
    kind = slide.metadata.get("format")
    if kind != "ome-zarr" and not _is_tiff(slide.path):
        return [[] for _ in range(n_levels)]
    if kind == "ome-zarr":
        names = [a.lower() for a in slide.metadata["axes"]]
        yx = (names.index("y"), names.index("x"))
        return [_missing_chunks(a, yx) for a in open_ome_zarr_levels(slide.path)[:n_levels]]
    with tifffile.TiffFile(slide.path) as tif:
        return [_missing_tiff_tiles(level) for level in tif.series[0].levels[:n_levels]]


def _is_tiff(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(4)
    return any(head.startswith(magic) for magic, kind in MAGIC.items() if kind == "tiff")


def _missing_tiff_tiles(level: tifffile.TiffPageSeries) -> list[tuple[int, int]]:
    page = level.keyframe
    empty = [
        i
        for p in level.pages
        if p is not None
        for i, (offset, count) in enumerate(zip(p.dataoffsets, p.databytecounts, strict=True))
        if offset == 0 or count == 0
    ]
    columns = -(-page.imagewidth // page.tilewidth) if page.is_tiled else 1
    rows = -(-page.imagelength // (page.tilelength if page.is_tiled else page.rowsperstrip))
    return [(i // columns % rows, i % columns) for i in empty]  # planes of planar files repeat


def _missing_chunks(array: zarr.Array, yx: tuple[int, int]) -> list[tuple[int, int]]:
    """Chunks of an array in a local store without a file, as (row, column); ``yx`` are the
    indices of the y and x axes."""
    root = Path(array.store.root) / array.path
    grid = [range(-(-n // c)) for n, c in zip(array.shape, array.chunks, strict=True)]
    return sorted(
        {
            (coords[yx[0]], coords[yx[1]])
            for coords in itertools.product(*grid)
            if not (root / array.metadata.encode_chunk_key(coords)).exists()
        }
    )
