"""The JSON summary of a batch run: per slide tiles, blocks, time and errors; written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vstain.io.atomic import write_text_atomically


@dataclass
class SlideReport:
    """One slide of a run. ``status``: done, failed, or cancelled (unfinished, resumable)."""

    slide: str
    out: str
    tiles: int = 0
    computed: int = 0
    background: int = 0
    already_done: int = 0
    blocks: int = 0
    blocks_done: int = 0
    blocks_failed: int = 0
    worker_seconds: float = 0.0
    status: str = "cancelled"
    error: str | None = None

    def add_block(self, result: dict) -> None:
        """Count a finished block (tiles an earlier, lost attempt wrote count as already done)."""
        self.computed += result["computed"]
        self.already_done += result["already_done"]
        self.background += result["background"]
        self.worker_seconds += result["seconds"]
        self.blocks_done += 1

    def fail(self, error: str) -> None:
        """Mark the slide failed, keeping its first error."""
        self.status = "failed"
        self.error = self.error or error


@dataclass
class BatchSummary:
    """A whole run; ``tiles_per_second`` counts tiles written by this run over its wall time."""

    slides: list[SlideReport]
    seconds: float = 0.0
    workers: int = 0
    cancelled: bool = False
    dashboard: str | None = None

    @property
    def tiles(self) -> int:
        return sum(s.computed + s.background for s in self.slides)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    @property
    def failures(self) -> list[dict]:
        return [{"slide": s.slide, "error": s.error} for s in self.slides if s.error]

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "tiles": self.tiles,
            "tiles_per_second": self.tiles_per_second,
            "failures": self.failures,
        }


def write_summary(summary: BatchSummary, path: Path) -> Path:
    """Write ``summary`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    return write_text_atomically(path, json.dumps(summary.to_dict(), indent=2))
