"""Stitching tile outputs into chunks: centre-crop, or feathered blending of overlapping bands."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vstain.tiles.grid import Tile, TileGrid
from vstain.tiles.store import OutputSpec

ChunkWriter = Callable[[Tile, dict[str, np.ndarray]], None]


class CropStitcher:
    """Each chunk is the centre crop of its own tile's output (halo discarded)."""

    serial = False  # keeps no state: tiles may be added from several threads at once

    def __init__(self, specs: dict[str, OutputSpec], write: ChunkWriter):
        self.specs, self.write = specs, write

    def add(self, tile: Tile, outputs: dict[str, np.ndarray]) -> None:
        rows, cols = tile.inner
        self.write(tile, {n: self.specs[n].encode(v[:, rows, cols]) for n, v in outputs.items()})


def _ramp(start: int, stop: int, extent: int, band: int, lo: int, hi: int) -> np.ndarray:
    """1-D weights over [lo, hi) for a core [start, stop): linear ramps 2 * band wide centred on
    the core's inner edges (none at the image border), so neighbours' weights sum to one."""
    x = np.arange(lo, hi, dtype=np.float32) + 0.5
    w = np.ones_like(x)
    if start > 0:
        w = np.minimum(w, np.clip((x - (start - band)) / (2 * band), 0, 1))
    if stop < extent:
        w = np.minimum(w, np.clip(((stop + band) - x) / (2 * band), 0, 1))
    return w


class FeatherStitcher:
    """Blend each tile's output ``band`` px into its neighbours with linear ramps.

    A chunk is written once, when every tile of this run that overlaps it has contributed, so its
    pending sums are held in memory until then (frontier of the tile order); after a cancel they are
    dropped and those chunks stay pending for the next run. Labels are not blended: they take their
    own tile's core. Tiles finished by an earlier run contribute nothing to a resumed run's chunks,
    so a resumed feathered run can differ from an uninterrupted one within ``band`` px of such
    tiles (crop mode has no such limit).
    """

    serial = True  # holds pending sums: one tile at a time

    def __init__(
        self,
        specs: dict[str, OutputSpec],
        write: ChunkWriter,
        grid: TileGrid,
        run_tiles: list[Tile],
        band: int,
    ):
        if not 0 < band <= grid.halo:
            raise ValueError(f"feather band must be in 1..halo ({grid.halo}), got {band}")
        self.specs, self.write, self.grid, self.band = specs, write, grid, band
        self.tiles = {t.index: t for t in run_tiles}
        self.expected = {i: len(self._neighbours(i) & self.tiles.keys()) for i in self.tiles}
        self.pending: dict[tuple[int, int], dict] = {}

    @staticmethod
    def _neighbours(index) -> set[tuple[int, int]]:
        r, c = index
        return {(r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}

    def add(self, tile: Tile, outputs: dict[str, np.ndarray]) -> None:
        h, w = self.grid.shape
        x0, y0, x1, y1 = tile.core
        wx0, wy0 = tile.window[:2]
        bx0, by0 = max(x0 - self.band, 0), max(y0 - self.band, 0)
        bx1, by1 = min(x1 + self.band, w), min(y1 + self.band, h)
        wy = _ramp(y0, y1, h, self.band, by0, by1)
        wx = _ramp(x0, x1, w, self.band, bx0, bx1)
        weight = wy[:, None] * wx[None, :]
        for index in self._neighbours(tile.index) & self.tiles.keys():
            cx0, cy0, cx1, cy1 = self.tiles[index].core
            ix0, iy0, ix1, iy1 = max(cx0, bx0), max(cy0, by0), min(cx1, bx1), min(cy1, by1)
            if ix0 < ix1 and iy0 < iy1:
                self._accumulate(
                    index,
                    tile,
                    outputs,
                    weight[iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0],
                    (ix0, iy0, ix1, iy1),
                    (wx0, wy0),
                )
            self.expected[index] -= 1
            if self.expected[index] == 0:
                self._emit(index)

    def _accumulate(self, index, tile, outputs, weight, box, origin) -> None:
        cx0, cy0, cx1, cy1 = self.tiles[index].core
        acc = self.pending.setdefault(index, {"w": np.zeros((cy1 - cy0, cx1 - cx0), np.float32)})
        ix0, iy0, ix1, iy1 = box
        ys, xs = slice(iy0 - cy0, iy1 - cy0), slice(ix0 - cx0, ix1 - cx0)
        win = (slice(iy0 - origin[1], iy1 - origin[1]), slice(ix0 - origin[0], ix1 - origin[0]))
        acc["w"][ys, xs] += weight
        for name, values in outputs.items():
            part = values[:, win[0], win[1]]
            if self.specs[name].integer:
                if index == tile.index:
                    acc[name] = part
                continue
            if part.dtype == np.uint8:  # an "rgb" output rounded on the device: back to [0, 1]
                part = part / np.float32(255.0)
            total = acc.setdefault(name, np.zeros((part.shape[0], *acc["w"].shape), np.float32))
            total[:, ys, xs] += part * weight

    def _emit(self, index) -> None:
        acc = self.pending.pop(index)
        weight = np.maximum(acc.pop("w"), 1e-12)
        blocks = {}
        for name, values in acc.items():
            spec = self.specs[name]
            blocks[name] = spec.encode(values if spec.integer else values / weight)
        self.write(self.tiles[index], blocks)
