"""A staining worker: one model loaded once in a process of its own; stain orders in, events out.

A front end with a user interface (the napari widget) stains through a `StainWorker`, so that the
engine's reader and writer threads and the model never share its interpreter lock or wait for its
UI thread. The worker is spawned (the start method of Windows and macOS, used everywhere so that
one design runs and is tested), loads its model and runs one forward pass to warm it up, then says
`Ready`. It takes `StainOrder`s one at a time and sends, for each: `Opened` per part once the
store exists, `TileDone` per finished tile (with the tile's stored pixels when asked: a viewer
needs no decode), `PartDone` with the part's `RunResult`, `JobFailed` with an error it raised, and
`Ended` last. Cancelling an order stops it at its next tile, as the engine's cancel token does.

However the worker ends (cancelled, the parent gone, killed), the store stays consistent: the
engine sets a tile's done flag only after its writes and writes chunks atomically, so the next
order resumes it. A worker whose parent dies cancels its order and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vstain.errors import VstainError
from vstain.io import Slide, open_ome_zarr_levels, open_slide
from vstain.pipeline.loaded_model import LoadedModel, load_model
from vstain.pipeline.plan import plan_run
from vstain.pipeline.run import run_plan
from vstain.tiles import Progress, RunResult, Tile
from vstain.tiles.chunkio import ChunkIO
from vstain.tiles.job import slide_tissue_mask
from vstain.tiles.store import OutputStore

#: The start method: spawn is the only one Windows and macOS have (and safe beside Qt's threads).
CONTEXT = multiprocessing.get_context("spawn")
#: The worker runs this much nicer than its parent (POSIX), so a UI thread that wakes up gets a
#: core at once.
NICE = 5
#: A worker whose parent died gives its order this long to stop at a tile, then exits anyway.
ORPHAN_EXIT_S = 5.0
#: Side (px, rounded up to the model's stride) of the window the model is warmed up with.
WARM_UP_SIDE = 64
#: Larger than any job id: cancels every order.
CANCEL_ALL = 2**62

Region = tuple[int, int, int, int]


class WorkerError(VstainError):
    """The staining process failed or stopped; the message says how."""


@dataclass(frozen=True)
class StainOrder:
    """One job: ``parts`` are (region, toward) pairs in level-0 pixels of ``slide`` (region None:
    the whole slide), stained one after the other into ``store``. ``pixels``: the outputs whose
    stored pixels each `TileDone` carries."""

    job: int
    slide: Path
    store: Path
    parts: tuple[tuple[Region | None, tuple[float, float] | None], ...]
    tile: int
    batch_size: int
    options: dict = field(default_factory=dict)
    pixels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prepare:
    """Open ``slide`` and compute its tissue mask now, so a first click on it does not wait."""

    slide: Path


@dataclass(frozen=True)
class Ready:
    sha256: str
    seconds: float


@dataclass(frozen=True)
class LoadFailed:
    error: BaseException


@dataclass(frozen=True)
class Opened:
    job: int
    part: int
    store: Path
    downsample: float


@dataclass(frozen=True)
class TileDone:
    """A finished tile; ``pixels`` maps an output to its shares [(level, y, x, block (C, h, w))]
    of the store's levels, level 0 first (the tile's core and its downsampled copies)."""

    job: int
    progress: Progress
    pixels: dict[str, list[tuple[int, int, int, np.ndarray]]] | None = None


@dataclass(frozen=True)
class PartDone:
    job: int
    part: int
    result: RunResult


@dataclass(frozen=True)
class JobFailed:
    job: int
    error: BaseException


@dataclass(frozen=True)
class Ended:
    job: int


def portable_error(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a `WorkerError` with its type and message; an
    error that is not a `VstainError` keeps the worker's traceback as a note."""
    if not isinstance(error, VstainError | OSError):
        error.add_note("In the staining process:\n" + "".join(traceback.format_exception(error)))
    try:
        copy = pickle.loads(pickle.dumps(error))
        if type(copy) is type(error) and str(copy) == str(error):
            return error
    except Exception:  # an exception class that does not pickle
        pass
    return WorkerError(f"{type(error).__name__}: {error}")


class _Cancel:
    """The engine's cancel token for one order: cancelled once the shared counter reaches it."""

    def __init__(self, shared, job: int):
        self._shared, self._job = shared, job

    @property
    def cancelled(self) -> bool:
        return self._shared.value >= self._job

    def cancel(self) -> None:
        self._shared.value = max(self._shared.value, self._job)


class _Outbox:
    """Events to the parent, sent by a thread of their own: the engine never blocks on a parent
    that reads its pipe only a few times a second."""

    def __init__(self, connection):
        self._connection = connection
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._send, daemon=True, name="vstain-outbox")
        self._thread.start()

    def put(self, event) -> None:
        self._queue.put(event)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _send(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._connection.send(event)
            except OSError:  # the parent is gone
                return


def _tile_pixels(levels: dict, specs: dict, tile: Tile) -> dict:
    """Each output's stored pixels of ``tile`` at level 0 (read back: written just now) and its
    shares of the coarser levels the engine writes per tile."""
    x0, y0 = tile.core[:2]
    row, col = tile.index
    shares = {}
    for name, level_io in levels.items():
        block = level_io[0].read((0, row, col))
        found, k = [(0, y0, x0, block)], 1
        while k < len(level_io) and 2**k <= level_io[0].chunks[-1]:
            block = specs[name].downsample(block)
            found.append((k, y0 >> k, x0 >> k, block))
            k += 1
        shares[name] = found
    return shares


class _Server:
    """The worker's side: a model, the slides it has opened, orders one at a time."""

    def __init__(self, loaded: LoadedModel | None, load_error, outbox: _Outbox, cancel_shared):
        self.loaded, self.load_error, self.outbox = loaded, load_error, outbox
        self.cancel_shared = cancel_shared
        self.slides: dict[Path, Slide] = {}

    def slide(self, path: Path) -> Slide:
        if path not in self.slides:
            self.slides[path] = open_slide(path)
        return self.slides[path]

    def prepare(self, order: Prepare) -> None:
        """A slide's tissue mask (cached by the engine); an error waits for an order that needs
        the slide."""
        with contextlib.suppress(Exception):  # reported by the order that uses the slide
            slide_tissue_mask(self.slide(order.slide))

    def stain(self, order: StainOrder) -> None:
        job, put = order.job, self.outbox.put
        token = _Cancel(self.cancel_shared, job)
        try:
            if self.loaded is None:
                raise self.load_error
            slide = self.slide(order.slide)
            for part, (region, toward) in enumerate(order.parts):
                if token.cancelled:
                    break
                plan = plan_run(
                    slide,
                    self.loaded,
                    order.store,
                    region=region,
                    tile=order.tile,
                    batch_size=order.batch_size,
                    toward=toward,
                    resume=True,
                    options=order.options,
                )
                result = self._run(plan, order, part, token)
                put(PartDone(job, part, result))
                if result.cancelled:
                    break
        except BaseException as e:  # every error goes to the parent
            put(JobFailed(job, portable_error(e)))
        finally:
            put(Ended(job))

    def _run(self, plan, order: StainOrder, part: int, token: _Cancel) -> RunResult:
        put, levels, specs = self.outbox.put, {}, {}

        def opened(store: OutputStore) -> None:
            specs.update(store.specs)
            for name in order.pixels:
                if name in store.specs:
                    arrays = open_ome_zarr_levels(store.path / name)
                    levels[name] = [ChunkIO(a) for a in arrays]
            put(Opened(order.job, part, store.path, plan.downsample))

        def progress(p: Progress) -> None:
            pixels = _tile_pixels(levels, specs, p.tile) if levels else None
            put(TileDone(order.job, p, pixels))

        return run_plan(plan, progress=progress, cancel=token, opened=opened)


def _warm_up(loaded: LoadedModel) -> None:
    """One forward pass of a small window: the first call of a model in a process pays for
    loading torch's kernels and allocators, so the first click does not (small, because a
    diffusion model's default sampling of a full window takes many seconds on a CPU)."""
    m = loaded.model.size_multiple
    side = -(-WARM_UP_SIDE // m) * m
    window = np.full((1, side, side, 3), 230, np.uint8)
    loaded.tile_function({})(window, [(0, 0)])


def _exit_with_parent(cancel_shared) -> None:
    """Cancel every order when the parent process ends; exit if the order does not stop soon."""
    multiprocessing.parent_process().join()
    cancel_shared.value = CANCEL_ALL
    time.sleep(ORPHAN_EXIT_S)
    os._exit(0)


def serve(checkpoint: str, device: str, orders, events, cancel_shared, nice: int) -> None:
    """The worker process's entry point (napari-free)."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    outbox = _Outbox(events)
    threading.Thread(
        target=_exit_with_parent, args=(cancel_shared,), daemon=True, name="vstain-orphan"
    ).start()
    start, loaded, error = time.perf_counter(), None, None
    try:
        loaded = load_model(checkpoint, device)
        _warm_up(loaded)
        outbox.put(Ready(loaded.sha256, time.perf_counter() - start))
    except BaseException as e:  # reported to the parent, and to each order
        error = portable_error(e)
        outbox.put(LoadFailed(error))
    server = _Server(loaded, error, outbox, cancel_shared)
    while True:
        try:
            order = orders.recv()
        except (EOFError, OSError):  # the parent closed its end, or died
            break
        if order is None:
            break
        if isinstance(order, Prepare):
            server.prepare(order)
        else:
            server.stain(order)
    outbox.close()


@contextlib.contextmanager
def _main_left_alone():
    """Start a process without the parent's main module: spawn would run a script again in the
    child (a user's script that opens napari without an ``if __name__ == "__main__"`` guard
    would open it twice, and fail)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def checkpoint_key(checkpoint: Path, device: str) -> tuple:
    """What a worker was started for: the checkpoint file as it is now, and the device."""
    path = Path(checkpoint).resolve()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    return str(path), stamp, device


class StainWorker:
    """The parent's handle of a worker process for ``checkpoint`` on ``device``.

    Nothing blocks: `submit` queues an order, `receive` returns the events that arrived (`Ready`
    and `LoadFailed` also set ``ready`` / ``load_error``), `cancel` stops an order at its next
    tile. ``alive`` is False once the process has ended (``exitcode`` says how).
    """

    def __init__(self, checkpoint: Path, device: str = "auto", nice: int = NICE):
        self.key = checkpoint_key(checkpoint, device)
        self.ready = False
        self.sha256: str | None = None
        self.load_error: BaseException | None = None
        self.load_seconds: float | None = None
        self._jobs = 0
        order_end, self._orders = CONTEXT.Pipe(duplex=False)
        self._events, event_end = CONTEXT.Pipe(duplex=False)
        self._cancel = CONTEXT.Value("q", 0, lock=False)
        self.process = CONTEXT.Process(
            target=serve,
            args=(self.key[0], device, order_end, event_end, self._cancel, nice),
            daemon=True,
            name="vstain-stain-worker",
        )
        with _main_left_alone():
            self.process.start()
        order_end.close()  # the child's ends: once it dies, reading gives EOF
        event_end.close()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def submit(self, **order) -> int:
        """Send a `StainOrder` of ``order``'s fields; returns its job id."""
        self._jobs += 1
        self._send(StainOrder(job=self._jobs, **order))
        return self._jobs

    def prepare(self, slide: Path) -> None:
        self._send(Prepare(Path(slide)))

    def _send(self, message) -> None:
        try:
            self._orders.send(message)
        except OSError as e:
            raise WorkerError(self.stopped_message()) from e

    def cancel(self, job: int) -> None:
        self._cancel.value = max(self._cancel.value, job)

    def receive(self) -> list:
        """Every event that has arrived (never waits)."""
        events = []
        try:
            while self._events.poll(0):
                events.append(self._events.recv())
        except (EOFError, OSError):  # the worker is gone; what it sent before is in ``events``
            pass
        for event in events:
            if isinstance(event, Ready):
                self.ready, self.sha256, self.load_seconds = True, event.sha256, event.seconds
            elif isinstance(event, LoadFailed):
                self.load_error = event.error
        return events

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the model is loaded (or failed, or the worker ended); True when ready."""
        end = time.monotonic() + timeout
        while not (self.ready or self.load_error) and self.alive and time.monotonic() < end:
            self._events.poll(min(0.05, max(end - time.monotonic(), 0)))
            self.receive()
        return self.ready

    def stopped_message(self) -> str:
        code = self.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return (
            f"The staining process stopped unexpectedly ({how}). The tiles it finished are "
            "kept: stain again to resume (a new process starts)."
        )

    def stop(self, timeout: float = 1.0, kill: bool = True) -> None:
        """Cancel every order and ask the worker to exit; wait ``timeout`` s, then kill it if
        ``kill`` (else it exits at its next tile, when its order has flushed the store)."""
        self._cancel.value = CANCEL_ALL
        with contextlib.suppress(OSError):  # already gone
            self._orders.send(None)
        self.process.join(timeout)
        if kill and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._orders.close()
        self._events.close()
