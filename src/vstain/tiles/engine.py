"""The pipelined tile engine: reader thread -> batched model calls -> writer thread -> zarr store.

The model is any callable taking a float32 batch (B, 3, H, W) in [0, 1] and returning a dict of
(B, C, H, W) arrays (numpy or torch), one per :class:`OutputSpec`. A callable with an ``origins``
parameter also gets each window's top-left (y, x) in level pixels (position-seeded noise of
diffusion models, so that overlapping windows share it). It runs on the calling thread;
reading and writing overlap with it on their own threads through bounded queues.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vstain.tiles.blend import CropStitcher, FeatherStitcher
from vstain.tiles.cache import ChunkCache
from vstain.tiles.grid import Tile, TileGrid, read_window
from vstain.tiles.store import BACKGROUND, COMPUTED, PENDING, OutputStore

BatchFn = Callable[..., dict]  # fn(batch) or fn(batch, origins=[(y, x), ...])
_END = object()


class CancelToken:
    """Thread-safe flag a caller sets to stop a run at the next tile."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Progress:
    """Reported after every finished tile."""

    done: int
    total: int
    tiles_per_second: float
    tile: Tile | None = None


@dataclass(frozen=True)
class RunResult:
    computed: int
    background: int
    already_done: int
    total: int
    seconds: float
    cancelled: bool

    @property
    def tiles_per_second(self) -> float:
        return (self.computed + self.background) / self.seconds if self.seconds > 0 else 0.0


def to_numpy(value) -> np.ndarray:
    """numpy view of a numpy array or a (possibly GPU) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def plan_tiles(
    grid: TileGrid, store: OutputStore, tiles: list[Tile], is_tissue: Callable[[Tile], bool]
) -> tuple[list[Tile], list[Tile], int]:
    """Split ``tiles`` into (to compute, background) and count those already done."""
    done = store.done_map()
    pending = [t for t in tiles if done[t.index] == PENDING]
    compute = [t for t in pending if is_tissue(t)]
    background = [t for t in pending if not is_tissue(t)]
    return compute, background, len(tiles) - len(pending)


class _Pipeline:
    """One run's threads and queues; ``run`` returns the counts."""

    def __init__(
        self,
        level,
        fn: BatchFn,
        store: OutputStore,
        grid: TileGrid,
        batch_size: int,
        blend: str,
        band: int,
        progress,
        cancel: CancelToken,
    ):
        self.level, self.fn, self.store, self.grid = level, fn, store, grid
        self.wants_origins = "origins" in inspect.signature(fn).parameters
        self.batch_size, self.progress, self.cancel = batch_size, progress, cancel
        self.blend, self.band = blend, band
        self.inbox: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        self.outbox: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        self.errors: list[BaseException] = []
        self.finished = 0

    def _guard(self, target, *args):
        try:
            target(*args)
        except BaseException as e:  # re-raised on the calling thread
            self.errors.append(e)
            self.cancel.cancel()

    def _put(self, q: queue.Queue, item) -> bool:
        """Put unless cancelled; False when cancelled."""
        while not self.cancel.cancelled:
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, tiles: list[Tile]) -> None:
        level = ChunkCache(self.level) if hasattr(self.level, "blocks") else self.level
        for tile in tiles:
            if not self._put(self.inbox, (tile, read_window(level, tile.window))):
                return
        self._put(self.inbox, _END)

    def _write(self, stitcher, background: list[Tile], total: int, start: float) -> None:
        """Write computed tiles as they arrive; fill idle time with background tiles."""
        background = list(reversed(background))
        while True:
            if background and not self.cancel.cancelled:
                try:
                    item = self.outbox.get_nowait()
                except queue.Empty:
                    self._write_background(background.pop(), total, start)
                    continue
            else:
                item = self.outbox.get()
            if item is _END:
                break
            stitcher.add(*item)
            self._report(item[0], total, start)
        while background and not self.cancel.cancelled:
            self._write_background(background.pop(), total, start)

    def _write_background(self, tile: Tile, total: int, start: float) -> None:
        self.store.write_background(tile)
        self._report(tile, total, start)

    def _report(self, tile: Tile, total: int, start: float) -> None:
        self.finished += 1
        if self.progress is not None:
            rate = self.finished / max(time.perf_counter() - start, 1e-9)
            self.progress(Progress(self.finished, total, rate, tile))

    def _batches(self):
        """Yield lists of (tile, window) of up to batch_size; a short batch when input runs dry."""
        batch = []
        while not self.cancel.cancelled:
            try:
                item = self.inbox.get(timeout=0.05 if batch else 0.2)
            except queue.Empty:
                if batch:
                    yield batch
                    batch = []
                continue
            if item is _END:
                break
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.cancel.cancelled:
            yield batch

    def _compute(self) -> None:
        for batch in self._batches():
            windows = np.stack([w for _, w in batch]).astype(np.float32)
            windows = windows.transpose(0, 3, 1, 2) / np.float32(255.0)
            if self.wants_origins:
                result = self.fn(windows, origins=[(t.window[1], t.window[0]) for t, _ in batch])
            else:
                result = self.fn(windows)
            outputs = {name: to_numpy(v) for name, v in result.items()}
            for i, (tile, _) in enumerate(batch):
                if not self._put(self.outbox, (tile, {n: v[i] for n, v in outputs.items()})):
                    return

    def run(self, compute: list[Tile], background: list[Tile]) -> None:
        specs = self.store.specs
        write = self.store.write_tile
        stitcher = (
            FeatherStitcher(specs, write, self.grid, compute, self.band)
            if self.blend == "feather"
            else CropStitcher(specs, write)
        )
        start = time.perf_counter()
        total = len(compute) + len(background)
        reader = threading.Thread(
            target=self._guard, args=(self._read, compute), daemon=True, name="vstain-reader"
        )
        writer = threading.Thread(
            target=self._guard,
            args=(self._write, stitcher, background, total, start),
            daemon=True,
            name="vstain-writer",
        )
        reader.start()
        writer.start()
        try:
            self._compute()
        except BaseException as e:
            self.errors.append(e)
            self.cancel.cancel()
        finally:
            while True:  # the writer drains what was computed, then stops
                try:
                    self.outbox.put(_END, timeout=0.05)
                    break
                except queue.Full:
                    if not writer.is_alive():
                        break
            writer.join()
            reader.join()
        if self.errors:
            raise self.errors[0]


def run_tiles(
    level,
    fn: BatchFn,
    store: OutputStore,
    grid: TileGrid,
    tiles: list[Tile],
    *,
    is_tissue: Callable[[Tile], bool] | None = None,
    batch_size: int = 4,
    blend: str = "crop",
    band: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> RunResult:
    """Compute ``tiles`` (in the given order) of ``level`` into ``store``; skip tiles already done.

    ``level`` is the (Y, X, 3) uint8 array the grid covers. ``blend`` is "crop" (centre crop, the
    default: exact when the grid's halo covers the model's receptive field) or "feather" (linear
    blending over ``band`` px, default half the halo). Background tiles (``is_tissue`` False) are
    written as each output's background value without running the model.
    """
    if blend not in ("crop", "feather"):
        raise ValueError(f"blend must be 'crop' or 'feather', got {blend!r}")
    cancel = cancel or CancelToken()
    start = time.perf_counter()
    compute, background, already = plan_tiles(grid, store, tiles, is_tissue or (lambda t: True))
    pipeline = _Pipeline(
        level,
        fn,
        store,
        grid,
        batch_size,
        blend,
        band if band is not None else max(grid.halo // 2, 1),
        progress,
        cancel,
    )
    if compute or background:
        pipeline.run(compute, background)
    store.finish()
    done = store.done_map()
    return RunResult(
        computed=sum(int(done[t.index] == COMPUTED) for t in compute),
        background=sum(int(done[t.index] == BACKGROUND) for t in background),
        already_done=already,
        total=len(tiles),
        seconds=time.perf_counter() - start,
        cancelled=cancel.cancelled,
    )
