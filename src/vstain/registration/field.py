"""A coarse displacement field of the H&E: the local part of a registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class DisplacementField:
    """Displacement ``d`` (H&E level-0 px) on a grid: H&E point p maps to IHC ``A (p + d(p))``.

    Node (row i, column j) sits at level-0 (x, y) = (j * step + (step - 1) / 2, i * ...), the
    centre of a ``step``-pixel block; between nodes ``d`` is bilinear, beyond them it is constant.
    """

    step: float
    dx: np.ndarray  # (rows, columns) float32
    dy: np.ndarray

    def at(self, xy: np.ndarray) -> np.ndarray:
        """``d`` at (..., 2) H&E level-0 (x, y) positions, (..., 2)."""
        xy = np.asarray(xy, float)
        g = (xy - (self.step - 1) / 2) / self.step
        coords = [g[..., 1], g[..., 0]]
        return np.stack(
            [
                ndimage.map_coordinates(d, coords, order=1, mode="nearest")
                for d in (self.dx, self.dy)
            ],
            axis=-1,
        )

    def to_dict(self) -> dict:
        """JSON-ready form (values rounded to 1/1000 px)."""
        return {
            "step": self.step,
            "dx": np.round(self.dx, 3).tolist(),
            "dy": np.round(self.dy, 3).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> DisplacementField:
        """Inverse of ``to_dict``."""
        dx, dy = (np.asarray(data[k], np.float32) for k in ("dx", "dy"))
        if dx.ndim != 2 or dx.shape != dy.shape:
            raise ValueError(f"the field's grids {dx.shape}, {dy.shape} are not 2-D of one shape")
        return cls(float(data["step"]), dx, dy)
