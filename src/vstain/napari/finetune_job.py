"""One fine-tuning run of the widget, on a background thread (no napari or Qt here).

The trainer's callbacks append to deques the widget drains on the main thread: losses per step,
validation scores, and a preview of one region re-stained with each saved checkpoint.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vstain.io import Slide
from vstain.models import load_checkpoint, predict_batch
from vstain.napari.thread_job import ThreadJob
from vstain.train.finetune import FinetuneResult, finetune
from vstain.train.regions import IhcReader, Region

#: Longest side of the preview, in pixels of the model's level.
PREVIEW_SIDE = 512


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything `vstain.train.finetune.finetune` needs, plus the preview rectangle."""

    base: Path
    he: Slide
    ihc: Slide | IhcReader
    regions: tuple[Region, ...]
    out: Path
    level: int
    settings: dict = field(default_factory=dict)  # part, steps, lr, batch_size, crop, ...
    sources: dict = field(default_factory=dict)

    @property
    def preview_region(self) -> Region:
        """The first validation rectangle (else the first one)."""
        return next((r for r in self.regions if r.validation), self.regions[0])


def preview_window(request: FinetuneRequest, multiple: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) at the model's level: the preview rectangle, capped and cut to ``multiple``."""
    r, ds = request.preview_region, request.he.downsamples[request.level]
    w = min(int(r.w / ds), PREVIEW_SIDE) // multiple * multiple
    h = min(int(r.h / ds), PREVIEW_SIDE) // multiple * multiple
    return int(np.ceil(r.x / ds)), int(np.ceil(r.y / ds)), max(w, multiple), max(h, multiple)


class FinetuneJob(ThreadJob):
    """Runs a `FinetuneRequest`; ``losses``, ``validations`` and ``previews`` fill as it goes,
    ``result`` is the `FinetuneResult`."""

    name = "vstain-finetune-job"

    def __init__(self, request: FinetuneRequest):
        super().__init__()
        self.request = request
        self.steps = int(request.settings.get("steps", 300))
        self.step = 0
        self.started = time.perf_counter()
        self.losses: deque[tuple[int, dict]] = deque()
        self.validations: deque[tuple[int, dict]] = deque()
        self.previews: deque[tuple[int, np.ndarray, tuple]] = deque()

    @property
    def eta_seconds(self) -> float | None:
        if self.step == 0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed / self.step * (self.steps - self.step)

    def on_step(self, step: int, losses: dict, seconds: float) -> None:
        self.step = step
        self.losses.append((step, losses))

    def on_validation(self, step: int, metrics: dict) -> None:
        self.validations.append((step, metrics))

    def on_checkpoint(self, path: Path) -> None:
        """Re-stain the preview rectangle with the weights just saved."""
        model = load_checkpoint(path)
        x, y, w, h = preview_window(self.request, model.size_multiple)
        he = self.request.he.read_region(x, y, w, h, self.request.level)
        ihc = predict_batch(model, he[None], next(model.parameters()).device)["ihc"][0]
        rgb = np.clip(np.rint(ihc.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        self.previews.append((self.step, rgb, (x, y, w, h)))

    def work(self) -> FinetuneResult:
        r = self.request
        return finetune(
            r.base,
            r.he,
            r.ihc,
            list(r.regions),
            r.out,
            level=r.level,
            sources=r.sources,
            callbacks=[self],
            cancel=self.cancel_token,
            **r.settings,
        )
