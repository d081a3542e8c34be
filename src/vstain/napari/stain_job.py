"""One staining job of the widget, planned and run by `vstain.pipeline` on a background thread.

Nothing here touches napari or Qt: the widget's `JobRunner` reads ``updates`` / ``progress`` /
``take_landed()`` on the main thread and cancels through the job's `CancelToken`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vstain.io import Slide
from vstain.napari.thread_job import ThreadJob
from vstain.pipeline import ModelCache, plan_run, run_plan
from vstain.tiles import Progress, RunResult, Tile

Region = tuple[int, int, int, int]


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


class StainJob(ThreadJob):
    """Runs a `StainRequest` on its own thread."""

    name = "vstain-stain-job"

    def __init__(self, request: StainRequest, models: ModelCache):
        super().__init__()
        self.request = request
        self.models = models
        self.store: Path | None = None
        self.downsample = 1.0
        self.part = 0
        self.progress: Progress | None = None
        self.updates = 0
        self._landed: deque[Tile] = deque()
        self.results: list[RunResult] = []

    def take_landed(self) -> list[Tile]:
        """Tiles written since the last call (their boxes are in pixels of the model's level)."""
        tiles = []
        while self._landed:
            tiles.append(self._landed.popleft())
        return tiles

    def _on_progress(self, progress: Progress) -> None:
        self._landed.append(progress.tile)
        self.progress = progress
        self.updates += 1

    def work(self) -> None:
        request = self.request
        loaded = self.models.get(request.checkpoint, request.device)
        self.store = store_path(request, loaded.sha256)
        for i, (region, toward) in enumerate(request.parts):
            self.part = i
            plan = plan_run(
                request.slide,
                loaded,
                self.store,
                region=region,
                tile=request.tile,
                batch_size=request.batch_size,
                toward=toward,
                resume=True,
                options=request.options,
            )
            self.downsample = plan.downsample
            result = run_plan(plan, progress=self._on_progress, cancel=self.cancel_token)
            self.results.append(result)
            if result.cancelled:
                return
