"""Tile geometry: chunk-aligned output tiles and the input windows (with halo) they need."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vstain.errors import RegionError


@dataclass(frozen=True)
class Tile:
    """One output tile: its grid index, its core (written) box and its input window.

    Boxes are (x0, y0, x1, y1) in pixels of the level being processed. The window has the model's
    input size; it may extend past the image (mirror-padded when read). ``inner`` is where the core
    lies inside the window.
    """

    index: tuple[int, int]  # (row, col)
    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def inner(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the core inside the window."""
        x0, y0, x1, y1 = self.core
        wx, wy = self.window[:2]
        return slice(y0 - wy, y1 - wy), slice(x0 - wx, x1 - wx)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile`` px aligned with multiples of ``tile`` over an image of ``shape`` (Y, X).

    Every window is ``tile + 2 * halo`` px on a side. A tile cut short by the image border keeps a
    full-size window by shifting it inward, so the model never sees padding it would not see inside
    the image; only images smaller than a tile, and halos past the border, are mirror-padded.
    ``align`` keeps every window start a multiple of it (a model's total stride), so strided models
    see each pixel at the same phase in every tile: shifted windows then move inward only as far as
    alignment allows, the rest being mirror padding.
    """

    shape: tuple[int, int]
    tile: int
    halo: int = 0
    align: int = 1

    def __post_init__(self):
        if self.tile <= 0 or self.halo < 0 or self.align < 1:
            raise ValueError("tile must be > 0, halo >= 0 and align >= 1")
        if self.tile % self.align or self.halo % self.align:
            raise ValueError(
                f"tile ({self.tile}) and halo ({self.halo}) must be multiples of "
                f"the model's stride ({self.align})"
            )
        if min(self.shape) <= 0:
            raise RegionError(f"Cannot tile an empty image of shape {self.shape}.")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return tuple(-(-s // self.tile) for s in self.shape)

    @property
    def window_size(self) -> int:
        return self.tile + 2 * self.halo

    def _window_start(self, start: int, extent: int) -> int:
        """Start of a full-size window holding [start, start + tile), shifted inward at the edge."""
        shifted = -(-max(extent - self.tile, 0) // self.align) * self.align
        return min(start, shifted) - self.halo

    def tile_at(self, row: int, col: int) -> Tile:
        """The tile at grid position (row, col)."""
        h, w = self.shape
        y0, x0 = row * self.tile, col * self.tile
        if not (0 <= y0 < h and 0 <= x0 < w):
            raise IndexError((row, col))
        core = (x0, y0, min(x0 + self.tile, w), min(y0 + self.tile, h))
        wx, wy = self._window_start(x0, w), self._window_start(y0, h)
        window = (wx, wy, wx + self.window_size, wy + self.window_size)
        return Tile((row, col), core, window)

    def tiles(self, region: tuple[int, int, int, int] | None = None) -> list[Tile]:
        """Tiles whose core intersects ``region`` (x, y, w, h); all tiles when None."""
        rows, cols = self.grid_shape
        if region is None:
            r0, r1, c0, c1 = 0, rows, 0, cols
        else:
            x, y, w, h = self.check_region(region)
            r0, r1 = y // self.tile, -(-(y + h) // self.tile)
            c0, c1 = x // self.tile, -(-(x + w) // self.tile)
        return [self.tile_at(r, c) for r in range(r0, r1) for c in range(c0, c1)]

    def check_region(self, region: Iterable[int]) -> tuple[int, int, int, int]:
        """Validate a region (x, y, w, h) against the image; clear error when it lies outside."""
        x, y, w, h = (int(v) for v in region)
        hh, ww = self.shape
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > ww or y + h > hh:
            raise RegionError(
                f"Region x={x}, y={y}, w={w}, h={h} is outside the image ({ww} x {hh} px). "
                "Give x, y, width, height inside the image."
            )
        return x, y, w, h


def read_window(level, window: tuple[int, int, int, int]) -> np.ndarray:
    """Read ``window`` (x0, y0, x1, y1) from a (Y, X, C) array, mirror-padding outside it.

    Works on dask, zarr and numpy arrays; only the part inside the image is read.
    """
    x0, y0, x1, y1 = window
    h, w = level.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    part = np.asarray(level[cy0:cy1, cx0:cx1])
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
    if not any(p for pair in pad for p in pair):
        return part
    return _mirror_pad(part, pad)


def _mirror_pad(part: np.ndarray, pad) -> np.ndarray:
    """Symmetric padding, repeated when the pad exceeds the image (tiny images)."""
    out = part
    while any(p for pair in pad for p in pair):
        h, w = out.shape[:2]
        step = tuple(
            (min(a, h if i == 0 else w), min(b, h if i == 0 else w)) if i < 2 else (0, 0)
            for i, (a, b) in enumerate(pad)
        )
        out = np.pad(out, step, mode="symmetric")
        pad = tuple((a - sa, b - sb) for (a, b), (sa, sb) in zip(pad, step, strict=True))
    return out


def order_tiles(tiles: list[Tile], toward: tuple[float, float] | None = None) -> list[Tile]:
    """Sort tiles by distance of their core centre to ``toward`` (x, y); raster order when None."""
    if toward is None:
        return sorted(tiles, key=lambda t: t.index)
    tx, ty = toward

    def distance(t: Tile) -> float:
        x0, y0, x1, y1 = t.core
        return ((x0 + x1) / 2 - tx) ** 2 + ((y0 + y1) / 2 - ty) ** 2

    return sorted(tiles, key=distance)
