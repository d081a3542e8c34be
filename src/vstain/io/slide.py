"""The `Slide`: a lazy multiscale RGB image with its pixel size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from vstain.errors import RegionError


@dataclass(frozen=True)
class Slide:
    """A slide as dask levels (full resolution first), RGB uint8, shape (Y, X, 3).

    ``pixel_size`` is micrometres per pixel at level 0, or None when the file does not say.
    """

    path: Path
    levels: list[da.Array]
    pixel_size: float | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0."""
        return tuple(self.levels[0].shape[:2])

    @property
    def downsamples(self) -> list[float]:
        """Downsample factor of each level relative to level 0 (from widths)."""
        w0 = self.levels[0].shape[1]
        return [w0 / lvl.shape[1] for lvl in self.levels]

    def level_pixel_size(self, level: int) -> float | None:
        """Micrometres per pixel at ``level``."""
        return None if self.pixel_size is None else self.pixel_size * self.downsamples[level]

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """Read a (h, w, 3) uint8 region at ``level``; coordinates are in that level's pixels."""
        lh, lw = self.levels[level].shape[:2]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > lw or y + h > lh:
            raise RegionError(
                f"Region x={x}, y={y}, w={w}, h={h} is outside level {level} of {self.path.name} "
                f"({lw} x {lh} px). Choose a region inside the slide."
            )
        return np.asarray(self.levels[level][y : y + h, x : x + w].compute())
