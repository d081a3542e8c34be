"""One staining job on one slide level: grid, tissue, store (new or resumed), order, run."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vstain.errors import OutputExistsError
from vstain.io.slide import Slide
from vstain.io.tiff_tiles import tiff_tiles
from vstain.tiles.cache import ChunkCache
from vstain.tiles.engine import BatchFn, CancelToken, RunResult, run_tiles
from vstain.tiles.grid import Tile, TileGrid, order_tiles
from vstain.tiles.store import DONE_BLOCK, OutputSpec, OutputStore
from vstain.tiles.tissue import pick_mask_level, tile_tissue_fraction, tissue_mask

#: Tissue masks of recently stained slides: the widget stains one slide view after view, and
#: recomputing the mask took 1-2 s of every click (docs/napari.md).
_MASKS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MASKS_LOCK = threading.Lock()
MASK_CACHE_SIZE = 8


def _mask_key(slide: Slide, index: int) -> tuple:
    """Identifies a slide file's level as it is now (path, size, modification time)."""
    try:
        stat = slide.path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        stamp = None
    return str(slide.path), stamp, tuple(slide.levels[index].shape)


def slide_tissue_mask(slide: Slide) -> np.ndarray:
    """Tissue mask computed on a low-resolution level of ``slide`` (cached per file and level)."""
    index = pick_mask_level([lvl.shape for lvl in slide.levels])
    key = _mask_key(slide, index)
    with _MASKS_LOCK:
        if key in _MASKS and key[1] is not None:
            _MASKS.move_to_end(key)
            return _MASKS[key]
    mask = tissue_mask(np.asarray(slide.levels[index].compute()))
    mask.flags.writeable = False
    with _MASKS_LOCK:
        _MASKS[key] = mask
        while len(_MASKS) > MASK_CACHE_SIZE:
            _MASKS.popitem(last=False)
    return mask


def open_output(
    out: Path,
    *,
    shape,
    tile: int,
    specs: list[OutputSpec],
    pixel_size,
    settings: dict,
    resume: bool,
    overwrite: bool,
    done_block: int = DONE_BLOCK,
    record: dict | None = None,
) -> OutputStore:
    """Create the output store, or reopen it to resume when it matches ``settings``. ``record``
    adds entries a new store keeps but a resume does not compare (the glass colour of background
    tiles, the slide's stain statistics, the inference precision)."""
    if out.exists() and resume and not overwrite:
        store = OutputStore.open(out)
        store.check_settings({**settings, "shape": list(shape), "tile": tile})
        return store
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} exists. Use --resume to continue that run or --overwrite to replace it."
        )
    return OutputStore.create(
        out,
        shape=shape,
        tile=tile,
        specs=specs,
        pixel_size=pixel_size,
        settings={**settings, **(record or {})},
        overwrite=overwrite,
        done_block=done_block,
    )


def run_settings(
    slide: Slide, level: int, halo: int, align: int, blend: str, model_settings: dict | None
) -> dict:
    """What a store records of its run, and what a resumed run must match (with shape, tile)."""
    return {
        "source": str(slide.path),
        "level": level,
        "halo": halo,
        "align": align,
        "blend": blend,
        "model": model_settings or {},
    }


def level_source(slide: Slide, level: int) -> ChunkCache:
    """``slide``'s ``level`` for the tile engine: decoded chunk by chunk through a cache, TIFF
    tiles directly (`vstain.io.tiff_tiles`), anything else through dask."""
    return ChunkCache(slide.levels[level], tiles=tiff_tiles(slide, level))


def tissue_test(slide: Slide, shape: tuple[int, int], min_tissue: float):
    """``is_tissue(tile)`` on a level of ``shape``: ``min_tissue`` of its core or more is tissue."""
    mask = slide_tissue_mask(slide) if min_tissue > 0 else None

    def is_tissue(t: Tile) -> bool:
        return mask is None or tile_tissue_fraction(mask, t.core, shape) >= min_tissue

    return is_tissue


def stain_level(
    slide: Slide,
    fn: BatchFn,
    out,
    *,
    specs: list[OutputSpec],
    level: int = 0,
    tile: int = 512,
    halo: int = 0,
    align: int = 1,
    region=None,
    toward=None,
    batch_size: int = 4,
    blend: str = "crop",
    band: int | None = None,
    min_tissue: float = 0.05,
    model_settings: dict | None = None,
    record: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    cancel: CancelToken | None = None,
    opened=None,
) -> RunResult:
    """Run ``fn`` over ``slide``'s ``level`` (or a ``region`` x, y, w, h of it) into store ``out``.

    Tiles are computed nearest ``toward`` (x, y) first, else in raster order; tiles with less than
    ``min_tissue`` tissue are written as background. ``align`` is the model's total stride (see
    `TileGrid`). Resuming requires the same settings; ``record`` (see `open_output`) is kept by a
    new store and not compared. ``opened(store)`` is called once the store exists (made or
    reopened), before the first tile is read: a viewer can show it at once.
    """
    array = slide.levels[level]
    shape = tuple(array.shape[:2])
    grid = TileGrid(shape, tile, halo, align)
    tiles = order_tiles(grid.tiles(region), toward)
    settings = run_settings(slide, level, halo, align, blend, model_settings)
    store = open_output(
        Path(out),
        shape=shape,
        tile=tile,
        specs=specs,
        pixel_size=slide.level_pixel_size(level),
        settings=settings,
        resume=resume,
        overwrite=overwrite,
        record=record,
    )
    if opened is not None:
        opened(store)
    return run_tiles(
        level_source(slide, level),
        fn,
        store,
        grid,
        tiles,
        is_tissue=tissue_test(slide, shape, min_tissue),
        batch_size=batch_size,
        blend=blend,
        band=band,
        progress=progress,
        cancel=cancel,
    )
