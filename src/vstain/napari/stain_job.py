"""One staining job of the widget, run by the plugin's staining process (`vstain.pipeline.worker`).

Nothing here touches napari or Qt, and nothing blocks: the widget's `JobRunner` reads
``finished`` (which takes the events the worker sent since), then ``progress`` / ``updates`` /
``take_landed()`` / ``take_shares()`` on the main thread, and cancels through the worker.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vstain.io import Slide
from vstain.pipeline.worker import (
    Ended,
    JobFailed,
    Opened,
    PartDone,
    StainWorker,
    TileDone,
    WorkerError,
)
from vstain.tiles import Progress, RunResult, Tile

Region = tuple[int, int, int, int]
#: Closing napari waits this long for a running job to stop at a tile; a job still running then
#: is left to stop at its next tile on its own (its process exits once the store is flushed).
CLOSE_WAIT_S = 1.0


@dataclass(frozen=True)
class StainRequest:
    """What one click asks for.

    ``parts`` are (region, toward) pairs stained one after the other: region (x, y, w, h) in
    full-resolution pixels or None for the whole slide, toward the (x, y) to start from.
    """

    kind: str  # "view", "selection" or "slide"
    slide: Slide
    parts: tuple[tuple[Region | None, tuple[float, float] | None], ...]
    checkpoint: Path
    device: str
    tile: int
    batch_size: int
    out_dir: Path
    options: dict = field(default_factory=dict)


def store_path(request: StainRequest, sha256: str) -> Path:
    """The output store of a slide, checkpoint, tile size and predict options (every action of the
    widget on that slide and model fills, and resumes, the same store)."""
    model = f"{request.checkpoint.stem}-{sha256[:8]}"
    options = "".join(f"-{k}{v}" for k, v in sorted(request.options.items()))
    return request.out_dir / f"{request.slide.path.name}.{model}-t{request.tile}{options}.zarr"


class StainJob:
    """A `StainRequest` run by ``worker``, with the job interface of `ThreadJob` (start, cancel,
    wait, finished, cancelled, result, error, stops_on_cancel). The order is sent once the
    worker's model is loaded (its checksum names the store). ``pixels``: outputs whose stored
    pixels come with each tile (`take_shares`)."""

    stops_on_cancel = True

    def __init__(self, request: StainRequest, worker: StainWorker, pixels: tuple[str, ...] = ()):
        self.request = request
        self.worker = worker
        self.pixels = pixels
        self.store: Path | None = None
        self.downsample = 1.0
        self.part = 0
        self.opened = 0  # parts whose store exists
        self.progress: Progress | None = None
        self.updates = 0
        self.results: list[RunResult] = []
        self.result = None
        self.error: BaseException | None = None
        self.detached = False  # closing napari did not wait for it to stop (`stop`)
        self._job: int | None = None
        self._started = False
        self._cancelled = False
        self._ended = False
        self._landed: deque[Tile] = deque()
        self._shares: deque[dict] = deque()

    def start(self) -> StainJob:
        self._started = True
        self._pump()
        return self

    def cancel(self) -> None:
        self._cancelled = True
        if self._job is not None:
            self.worker.cancel(self._job)
        elif self._started:  # not sent yet: nothing to stop
            self._ended = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def finished(self) -> bool:
        self._pump()
        return self._ended

    def wait(self, timeout: float | None = None) -> bool:
        """Take the worker's events until the job ends; True if it has."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float) -> None:
        """Cancel and wait at most ``timeout`` s (at most `CLOSE_WAIT_S`) for the job to stop at
        a tile (closing napari); else count it as ended: its process stops it at its next tile."""
        self.cancel()
        if not self.wait(min(timeout, CLOSE_WAIT_S)):
            self.detached = self._ended = True

    def take_landed(self) -> list[Tile]:
        """Tiles written since the last call (their boxes are in pixels of the model's level)."""
        tiles = []
        while self._landed:
            tiles.append(self._landed.popleft())
        return tiles

    def take_shares(self) -> list[dict]:
        """Stored pixels of the tiles written since the last call (see `TileDone.pixels`)."""
        shares = []
        while self._shares:
            shares.append(self._shares.popleft())
        return shares

    def _on_progress(self, progress: Progress) -> None:
        self._landed.append(progress.tile)
        self.progress = progress
        self.updates += 1

    def _pump(self) -> None:
        """Take the worker's events; send the order once the model is loaded; a worker that died
        before the job ended is the job's error."""
        if self._ended or not self._started:
            return
        dead = not self.worker.alive  # read first: its last events are in the pipe
        for event in self.worker.receive():
            if getattr(event, "job", None) == self._job and self._job is not None:
                self._take(event)
        if self._ended:
            return
        if self._job is None:
            if self.worker.load_error is not None:
                self.error, self._ended = self.worker.load_error, True
            elif self.worker.ready and not self._cancelled:
                self._send()
                return
        if dead:
            self.error, self._ended = WorkerError(self.worker.stopped_message()), True

    def _send(self) -> None:
        request = self.request
        self.store = store_path(request, self.worker.sha256)  # set once the worker is ready
        try:
            self._job = self.worker.submit(
                slide=request.slide.path,
                store=self.store,
                parts=request.parts,
                tile=request.tile,
                batch_size=request.batch_size,
                options=request.options,
                pixels=self.pixels,
            )
        except WorkerError as e:
            self.error, self._ended = e, True

    def _take(self, event) -> None:
        if isinstance(event, TileDone):
            self._on_progress(event.progress)
            if event.pixels:
                self._shares.append(event.pixels)
        elif isinstance(event, Opened):
            self.part, self.store, self.downsample = event.part, event.store, event.downsample
            self.opened += 1
        elif isinstance(event, PartDone):
            self.results.append(event.result)
        elif isinstance(event, JobFailed):
            self.error = event.error
        elif isinstance(event, Ended):
            self._ended = True
