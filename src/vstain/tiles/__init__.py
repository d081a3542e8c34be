"""Tile geometry, tissue detection, stitching and the pipelined resumable tile engine."""

from vstain.tiles.engine import CancelToken, Progress, RunResult, run_tiles
from vstain.tiles.grid import Tile, TileGrid, order_tiles, read_window
from vstain.tiles.job import stain_level
from vstain.tiles.store import OutputSpec, OutputStore

__all__ = [
    "CancelToken",
    "OutputSpec",
    "OutputStore",
    "Progress",
    "RunResult",
    "Tile",
    "TileGrid",
    "order_tiles",
    "read_window",
    "run_tiles",
    "stain_level",
]
