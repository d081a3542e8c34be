"""What runs on a dask worker: the model (loaded once per worker process), blocks, slide finish."""

from __future__ import annotations

import time
from pathlib import Path

import dask
from distributed import WorkerPlugin, get_worker

from vstain.batch.plan import Block, SlideJob
from vstain.errors import StainError
from vstain.io import open_slide
from vstain.pipeline.normalise import OPTION as NORMALISE
from vstain.pipeline.normalise import stored_normaliser
from vstain.tiles import OutputStore, TileGrid, run_tiles
from vstain.tiles.job import level_source, tissue_test

#: Slides are read inside a task with dask's synchronous scheduler: the worker's default would
#: send the slide's read graph (open file handles) to the cluster.
LOCAL_READS = {"scheduler": "synchronous"}


def worker_device(device: str, worker_name, n_gpus: int) -> str:
    """One GPU per worker: worker ``i`` of a local cluster takes ``cuda:i % n_gpus`` when
    ``device`` is auto or cuda and several GPUs are visible; otherwise ``device`` as given."""
    if device in ("auto", "cuda") and n_gpus > 1 and isinstance(worker_name, int):
        return f"cuda:{worker_name % n_gpus}"
    return device


class ModelPlugin(WorkerPlugin):
    """Loads the checkpoint once when a worker starts (or joins later) and keeps it."""

    def __init__(
        self, checkpoint: str, device: str, torch_threads: int | None, options: dict | None = None
    ):
        self.checkpoint, self.device, self.torch_threads = checkpoint, device, torch_threads
        self.options = dict(options or {})
        self.model = None

    def setup(self, worker) -> None:
        import torch

        from vstain.pipeline import load_model

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        device = worker_device(self.device, worker.name, torch.cuda.device_count())
        self.model = load_model(self.checkpoint, device)

    def teardown(self, worker) -> None:
        self.model = None


def run_block(plugin: str, job: SlideJob, block: Block, batch_size: int) -> dict:
    """Stain one block of tiles into the slide's store (shared with other workers); tiles an
    earlier (killed) attempt finished are skipped through the done-map."""
    start = time.perf_counter()
    model = get_worker().plugins[plugin]
    slide = open_slide(job.source)
    array = slide.levels[job.level]
    if tuple(array.shape[:2]) != tuple(job.shape):
        raise StainError(
            f"{job.source} changed since the batch was planned (level {job.level} is "
            f"{array.shape[1]} x {array.shape[0]} px, planned {job.shape[1]} x {job.shape[0]})."
            " Restart the batch with --overwrite for this slide."
        )
    grid = TileGrid(job.shape, job.tile, job.halo, job.align)
    store = OutputStore.open(job.store, concurrent=True)
    normaliser = stored_normaliser(store.settings.get(NORMALISE), model.model.card)
    with dask.config.set(LOCAL_READS):
        result = run_tiles(
            level_source(slide, job.level),
            model.model.tile_function(model.options, normaliser),
            store,
            grid,
            [grid.tile_at(r, c) for r, c in block.indices],
            is_tissue=tissue_test(slide, job.shape, job.min_tissue),
            batch_size=batch_size,
        )
    return {
        "computed": result.computed,
        "background": result.background,
        "already_done": result.already_done,
        "seconds": time.perf_counter() - start,
    }


def finish_slide(job: SlideJob, out: str, pixel_size: float | None, ome_tiff: bool) -> float:
    """Once every block is done: join objects cut by tile borders and build the coarse levels
    blocks share, convert to OME-TIFF if asked. Returns the seconds it took."""
    from vstain.pipeline import convert_to_ome_tiff

    start = time.perf_counter()
    with dask.config.set(LOCAL_READS):
        OutputStore.open(job.store, concurrent=True).complete()
        if ome_tiff:
            convert_to_ome_tiff(Path(job.store), Path(out), pixel_size, overwrite=True)
    return time.perf_counter() - start
