"""The plugin's one model cache and its one staining process, shared by its widgets.

A checkpoint the widgets read (the fine-tune base, the K-Stain model) is loaded once, on a job's
thread (never on the UI thread), and asking for another model frees the previous one. Staining
runs in a process of its own (`vstain.pipeline.worker`), one at a time: asking for another model
or device ends the previous process.
"""

from __future__ import annotations

from pathlib import Path

from vstain.pipeline import ModelCache
from vstain.pipeline.worker import StainWorker, checkpoint_key

MODELS = ModelCache()


class WorkerSlot:
    """Holds the staining process in use; `get` starts one for a checkpoint and device (the model
    loads and warms up there at once), replacing one of another model or that has ended."""

    def __init__(self):
        self.worker: StainWorker | None = None

    def get(self, checkpoint: Path, device: str) -> StainWorker:
        worker = self.worker
        if worker is None or worker.key != checkpoint_key(checkpoint, device) or not worker.alive:
            self.stop()
            self.worker = StainWorker(checkpoint, device)
        return self.worker

    def stop(self, kill: bool = True) -> None:
        """End the process: at once when idle; a running order stops at its next tile (or the
        process is killed after a second if ``kill``; either way the store stays consistent)."""
        if self.worker is not None:
            worker, self.worker = self.worker, None
            worker.stop(kill=kill)


WORKER = WorkerSlot()
