"""The pipelined tile engine: reader threads -> batched model calls -> writer threads -> store.

The model is any callable taking a float32 batch (B, 3, H, W) in [0, 1] and returning a dict of
(B, C, H, W) arrays (numpy or torch), one per :class:`OutputSpec`. A callable with an ``origins``
parameter also gets each window's top-left (y, x) in level pixels (position-seeded noise of
diffusion models, so that overlapping windows share it). A callable marked
``uint8_input = True`` gets the windows as they were read, uint8 (B, H, W, 3), and may return
its "rgb" outputs as uint8 0-255: no float copies on the host (`vstain.models.device.Predictor`
moves them to the device as uint8). A callable with a ``submit(batch[, origins])`` method that
returns a function giving the outputs runs one batch ahead when its ``runs_ahead`` is true (the
default): the next batch is stacked and sent while the device computes (see `Predictor`, which
runs ahead on CUDA only: on a CPU, submit computes, so running ahead would hold each tile back
until the next one is computed).

The model runs on the calling thread; windows are read and decoded by a pool of reader threads
(in the order given, a bounded number ahead), outputs are encoded and written by a pool of
writer threads, both sized to the cores by default, as the codecs release the GIL.
"""

from __future__ import annotations

import inspect
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vstain.tiles.blend import CropStitcher, FeatherStitcher
from vstain.tiles.cache import ChunkCache
from vstain.tiles.grid import Tile, TileGrid, read_window
from vstain.tiles.store import BACKGROUND, COMPUTED, PENDING, OutputStore

BatchFn = Callable[..., dict]  # fn(batch) or fn(batch, origins=[(y, x), ...])
_END = object()


def default_threads() -> int:
    """Reader and writer threads per run: one per core this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


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
    """numpy view of a numpy array or a (possibly GPU) torch tensor; half floats become float32."""
    if hasattr(value, "detach"):
        value = value.detach()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()
        value = value.cpu().numpy()
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
        threads: tuple[int, int],
    ):
        self.level, self.fn, self.store, self.grid = level, fn, store, grid
        self.wants_origins = "origins" in inspect.signature(fn).parameters
        self.uint8 = bool(getattr(fn, "uint8_input", False))
        self.batch_size, self.progress, self.cancel = batch_size, progress, cancel
        self.blend, self.band = blend, band
        self.readers, self.writers = threads
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
        """Queue each tile with the future of its window, in order; the pool decodes ahead."""
        level = ChunkCache(self.level) if hasattr(self.level, "blocks") else self.level
        with ThreadPoolExecutor(self.readers, thread_name_prefix="vstain-read") as pool:
            for tile in tiles:
                window = pool.submit(read_window, level, tile.window)
                if not self._put(self.inbox, (tile, window)):
                    window.cancel()
                    return
            self._put(self.inbox, _END)

    def _write(self, stitcher, background: list[Tile], total: int, start: float) -> None:
        """Write computed tiles as they arrive on the writer pool; fill idle time with background
        tiles. Progress is reported in the order tiles were handed to the pool."""
        background = list(reversed(background))
        inflight: deque[tuple[Tile, Future]] = deque()
        limit = 2 * self.writers
        lock = threading.Lock() if stitcher.serial else None
        with ThreadPoolExecutor(self.writers, thread_name_prefix="vstain-write") as pool:
            try:
                while True:
                    self._reap(inflight, total, start, block=len(inflight) >= limit)
                    if len(inflight) >= limit:
                        continue
                    if background and not self.cancel.cancelled:
                        try:
                            item = self.outbox.get_nowait()
                        except queue.Empty:
                            tile = background.pop()
                            inflight.append((tile, pool.submit(self.store.write_background, tile)))
                            continue
                    else:
                        try:
                            item = self.outbox.get(timeout=0.05 if inflight else None)
                        except queue.Empty:
                            continue
                    if item is _END:
                        break
                    inflight.append((item[0], pool.submit(_add, stitcher, lock, *item)))
                while background and not self.cancel.cancelled:
                    self._reap(inflight, total, start, block=len(inflight) >= limit)
                    tile = background.pop()
                    inflight.append((tile, pool.submit(self.store.write_background, tile)))
                while inflight:
                    self._reap(inflight, total, start, block=True)
            finally:
                for _, future in inflight:  # on an error: let started writes finish
                    future.cancel()

    def _reap(self, inflight: deque, total: int, start: float, block: bool) -> None:
        """Report the finished writes at the head of ``inflight`` (waiting for one if ``block``);
        a failed write raises here."""
        while inflight and (block or inflight[0][1].done()):
            tile, future = inflight.popleft()
            future.result()
            self._report(tile, total, start)
            block = False

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
            batch.append((item[0], item[1].result()))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.cancel.cancelled:
            yield batch

    def _call(self, batch: list) -> Callable[[], dict]:
        """Start the model on ``batch``; returns a function giving its outputs."""
        windows = np.stack([w for _, w in batch])
        if not self.uint8:
            windows = windows.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        kwargs = {"origins": [(t.window[1], t.window[0]) for t, _ in batch]}
        kwargs = kwargs if self.wants_origins else {}
        submit = getattr(self.fn, "submit", None)
        if submit is not None:
            return submit(windows, **kwargs)
        result = self.fn(windows, **kwargs)
        return lambda: result

    def _compute(self) -> None:
        """Run the model batch by batch; with ``fn.submit``, collect each batch's outputs after
        the next batch was sent, so that stacking and sending overlap the device's work."""
        ahead = int(hasattr(self.fn, "submit") and getattr(self.fn, "runs_ahead", True))
        started: deque = deque()
        for batch in self._batches():
            started.append((batch, self._call(batch)))
            if len(started) > ahead and not self._dispatch(*started.popleft()):
                return
        while started:
            if not self._dispatch(*started.popleft()):
                return

    def _dispatch(self, batch: list, outputs: Callable[[], dict]) -> bool:
        """Hand each tile's outputs to the writers; False when cancelled."""
        arrays = {name: to_numpy(v) for name, v in outputs().items()}
        for i, (tile, _) in enumerate(batch):
            if not self._put(self.outbox, (tile, {n: v[i] for n, v in arrays.items()})):
                return False
        return True

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


def _add(stitcher, lock: threading.Lock | None, tile: Tile, outputs: dict) -> None:
    """Stitch and write one tile's outputs (under ``lock`` for stitchers that keep state)."""
    if lock is None:
        stitcher.add(tile, outputs)
        return
    with lock:
        stitcher.add(tile, outputs)


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
    readers: int | None = None,
    writers: int | None = None,
) -> RunResult:
    """Compute ``tiles`` (in the given order) of ``level`` into ``store``; skip tiles already done.

    ``level`` is the (Y, X, 3) uint8 array the grid covers (or a `ChunkCache` over it). ``blend``
    is "crop" (centre crop, the default: exact when the grid's halo covers the model's receptive
    field) or "feather" (linear blending over ``band`` px, default half the halo). Background
    tiles (``is_tissue`` False) are written as each output's background value without running
    the model. ``readers`` and ``writers`` size the decoding and encoding thread pools
    (default: `default_threads`).
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
        (readers or default_threads(), writers or default_threads()),
    )
    if compute or background:
        store.expect(compute + background)
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
