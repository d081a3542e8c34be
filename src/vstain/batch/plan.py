"""Plan a cohort: per slide, an output store and the chunk-aligned blocks of tiles still to do."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path

import numpy as np

from vstain.errors import OutputExistsError, VstainError
from vstain.pipeline import plan_run
from vstain.pipeline.destination import TIFF_SUFFIXES
from vstain.tiles.job import open_output
from vstain.tiles.lock import StoreLock
from vstain.tiles.store import PENDING


@dataclass(frozen=True)
class SlideJob:
    """What a worker needs to stain blocks of one slide (small: sent with every block)."""

    source: str
    store: str
    level: int
    tile: int
    halo: int
    align: int
    shape: tuple[int, int]
    min_tissue: float


@dataclass(frozen=True)
class Block:
    """Grid rows [r0, r1) x columns [c0, c1) of slide ``slide``: one done-map chunk, one writer."""

    slide: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def indices(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(*self.rows) for c in range(*self.cols)]


@dataclass(frozen=True)
class SlidePlan:
    """One slide of the cohort: its job, final output, and the blocks this run must compute
    (``already_done`` counts the tiles of the other, finished blocks)."""

    job: SlideJob
    out: Path
    pixel_size: float | None
    blocks: list[Block]
    tiles: int
    already_done: int
    ome_tiff: bool
    finished: bool = False  # the OME-TIFF of an earlier run is already there
    lock: StoreLock | None = None  # held on the store while the batch writes it


def check_block(block: int) -> int:
    """A block side (tiles) must be a power of two, so coarse pyramid chunks nest in blocks."""
    if block < 1 or block & (block - 1):
        raise VstainError(f"--block must be a power of two (1, 2, 4, 8, ...), got {block}.")
    return block


def output_path(source: Path, out_dir: Path, ome_tiff: bool) -> Path:
    """``DIR/<slide name>.zarr`` or ``DIR/<slide name>.ome.tif``."""
    name = source.name
    for suffix in (".ome.tiff", ".ome.tif", *TIFF_SUFFIXES, ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = Path(name).stem
    return out_dir / f"{name}{'.ome.tif' if ome_tiff else '.zarr'}"


def check_outputs(outs: list[Path], resume: bool, overwrite: bool) -> None:
    """Refuse two slides with one output name, and existing outputs without resume/overwrite."""
    seen = {}
    for out in outs:
        if out in seen:
            raise VstainError(f"Two slides would both write {out}; give the slides distinct names.")
        seen[out] = True
    exists = [o for o in outs if o.exists() or o.with_name(o.name + ".zarr").exists()]
    if exists and not (resume or overwrite):
        raise OutputExistsError(
            f"{exists[0]} exists ({len(exists)} outputs do). Use --resume to continue that run "
            "or --overwrite to replace them."
        )


def pending_blocks(slide: int, done: np.ndarray, block: int) -> list[Block]:
    """Blocks of ``block`` x ``block`` grid cells with at least one pending tile, raster order."""
    rows, cols = done.shape
    return [
        Block(slide, (r, min(r + block, rows)), (c, min(c + block, cols)))
        for r in range(0, rows, block)
        for c in range(0, cols, block)
        if (done[r : r + block, c : c + block] == PENDING).any()
    ]


def plan_slide(
    index: int,
    source: Path,
    model,
    out: Path,
    *,
    tile: int | None,
    block: int,
    resume: bool,
    overwrite: bool,
    predict_options: dict | None = None,
) -> SlidePlan:
    """Plan ``source`` with `plan_run`, lock and create (or reopen to resume) its store, and list
    its unfinished blocks."""
    plan = plan_run(
        source,
        model,
        out,
        tile=tile,
        resume=resume,
        overwrite=overwrite,
        options=predict_options,
    )
    grid, dest = plan.grid, plan.dest
    n_tiles = int(np.prod(grid.grid_shape))
    job = SlideJob(
        str(source),
        str(dest.store),
        plan.level,
        grid.tile,
        grid.halo,
        grid.align,
        grid.shape,
        plan.min_tissue,
    )
    if dest.ome_tiff and out.exists() and resume and not overwrite and not dest.store.exists():
        return SlidePlan(job, out, plan.pixel_size, [], n_tiles, n_tiles, True, finished=True)
    lock = StoreLock(dest.store).acquire()
    try:
        store = open_output(
            dest.store,
            shape=grid.shape,
            tile=grid.tile,
            specs=plan.specs,
            pixel_size=plan.pixel_size,
            settings=plan.settings,
            record=plan.record,
            resume=resume,
            overwrite=overwrite,
            done_block=block,
        )
        blocks = pending_blocks(index, store.done_map(), store.block)
    except BaseException:
        lock.release()
        raise
    skipped = n_tiles - sum(len(b.indices) for b in blocks)
    return SlidePlan(job, out, plan.pixel_size, blocks, n_tiles, skipped, dest.ome_tiff, lock=lock)


def interleave(plans: list[SlidePlan]) -> list[Block]:
    """Blocks round-robin over slides (first block of each slide, then the second...), so a big
    or slow slide never holds back the others."""
    rounds = zip_longest(*(p.blocks for p in plans))
    return [b for b in chain.from_iterable(rounds) if b is not None]
