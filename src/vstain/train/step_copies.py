"""A trainer callback that keeps every checkpoint under its step's name: the candidates from which
a step is selected on the validation slide."""

from __future__ import annotations

from pathlib import Path

from vstain.io.atomic import copy_atomically
from vstain.models.checkpoint import beside, read_card


def step_copy_path(checkpoint: Path, step: int) -> Path:
    """``run.safetensors`` at step 500 -> ``run.step500.safetensors``."""
    return beside(checkpoint, f".step{step}.safetensors")


class StepCopies:
    """After each save, copy the checkpoint (weights and card, not the state to resume from) to
    `step_copy_path`; copies of earlier steps stay as they are."""

    def on_checkpoint(self, path) -> None:
        path = Path(path)
        copy_atomically(path, step_copy_path(path, read_card(path).steps))
