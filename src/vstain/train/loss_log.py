"""A trainer callback that keeps every step's losses in a CSV file next to the checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

from vstain.models.checkpoint import beside


def loss_log_path(checkpoint: Path) -> Path:
    """``run.safetensors`` -> ``run.losses.csv``."""
    return beside(checkpoint, ".losses.csv")


class LossLog:
    """Per-step losses in long form (``step, name, value``; ``seconds`` is one of the names).

    Rows reach the file when a checkpoint is written, so a run resumed from its checkpoint
    continues the log without repeating steps; ``fresh`` starts a new file.
    """

    def __init__(self, path: str | Path, *, fresh: bool):
        self.path = Path(path)
        self.rows: list[tuple[int, str, float]] = []
        if fresh:
            self.path.unlink(missing_ok=True)

    def on_step(self, step: int, losses: dict[str, float], seconds: float) -> None:
        self.rows += [(step, name, value) for name, value in {**losses, "seconds": seconds}.items()]

    def on_checkpoint(self, _path) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(("step", "name", "value"))
            writer.writerows((s, n, f"{v:.6g}") for s, n, v in self.rows)
        self.rows = []


def read_loss_log(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """The log as ``{name: (steps, values)}``, e.g. for plotting a loss curve."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            steps, values = out.setdefault(row["name"], ([], []))
            steps.append(int(row["step"]))
            values.append(float(row["value"]))
    return out
