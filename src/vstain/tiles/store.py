"""The output store of a tile run: one OME-Zarr image per model output plus a done-map.

Layout of ``OUT.zarr``::

    OUT.zarr/            zarr group; attrs["vstain"] = run settings (source, tile, outputs, model)
      ihc/0, ihc/1, ...  NGFF multiscale image, (C, Y, X), chunks (C, tile, tile)
      <other outputs>/   the same for uncertainty, segmentation, ...
      done               uint8 (rows, cols) of the tile grid: 0 pending, 1 computed, 2 background
      edges/<instances>  int64 (rows, cols, 4, tile): each tile's border rows and columns of object
                         ids, as the tile gave them; `merge_instances` joins objects across borders

A tile's core is exactly one chunk at level 0, so each tile is written once, and its share of every
coarser level whose downsample factor is at most the tile size lies inside one chunk there too;
those shares are pasted into coarse chunks held in memory and each coarse chunk is written when
its last tile of the run has arrived (`vstain.tiles.coarse`). Coarser levels (only for slides
over ~100k px) are rebuilt by :meth:`OutputStore.finish`. Concurrent writers (batch workers) each
own blocks of tiles the size of a done-map chunk; their tiles update only the coarse levels whose
chunks lie inside one block, and :meth:`OutputStore.complete` builds the rest once every block is
done. The done flag is set after all of a tile's writes, and chunks are written atomically
(temporary file + rename), so a killed run resumes without recomputing finished tiles and without
torn chunks.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import zarr

from vstain.errors import OutputExistsError, SlideError, VstainError
from vstain.io import create_ome_zarr, downsample_2x, open_ome_zarr_levels
from vstain.io.ome_zarr import is_output_store
from vstain.tiles.chunkio import ChunkIO
from vstain.tiles.coarse import CoarseChunks
from vstain.tiles.grid import Tile
from vstain.tiles.heap import release_free_memory
from vstain.tiles.instances import (
    border_pairs,
    core_edges,
    merged_ids,
    relabel,
    slide_ids,
    tile_of,
)

#: Grid cells per chunk of the done-map (default): a block of tiles is the unit one writer owns.
DONE_BLOCK = 8
PENDING, COMPUTED, BACKGROUND = 0, 1, 2
#: Queued coarse-level shares are pasted into their held chunks, complete chunks written and the
#: done flags of tiles whose chunks are all written set, about this often (seconds). A coarse
#: chunk is written once complete (see `vstain.tiles.coarse`), so flags wait for it; when
#: FLUSH_MAX_TILES flags wait, every changed chunk is written (a killed run loses fewer tiles).
FLUSH_SECONDS = 1.0
FLUSH_MAX_TILES = 256


@dataclass(frozen=True)
class OutputSpec:
    """One raster output of a model and how it is stored.

    ``kind`` "rgb": function gives 3 channels in [0, 1]; stored RGBA uint8, alpha 255 where computed
    and 0 where not yet, so napari shows pending tiles as transparent. "scalar": float channels,
    stored float32, NaN where not computed. "labels": one integer channel, stored int32, 0 pending.
    "instances": labels whose ids name objects (cells); the function numbers them per window, the
    store makes them unique over the slide and joins objects cut by tile borders
    (`vstain.tiles.instances`), stored int64.
    ``background`` is the value written for tiles without tissue, in the function's units: one
    value, or one per channel (the colour a model paints glass, so background tiles match it).
    """

    name: str
    kind: Literal["rgb", "scalar", "labels", "instances"] = "rgb"
    channels: int = 3
    background: float | tuple[float, ...] = 1.0

    def __post_init__(self):
        if isinstance(self.background, list):  # read back from the store's JSON
            object.__setattr__(self, "background", tuple(self.background))

    @property
    def stored_channels(self) -> int:
        return self.channels + 1 if self.kind == "rgb" else self.channels

    @property
    def integer(self) -> bool:
        """Labels of either kind: not blended, not averaged when downsampled."""
        return self.kind in ("labels", "instances")

    @property
    def dtype(self) -> np.dtype:
        dtypes = {"rgb": np.uint8, "scalar": np.float32, "labels": np.int32, "instances": np.int64}
        return np.dtype(dtypes[self.kind])

    @property
    def fill_value(self):
        return np.nan if self.kind == "scalar" else 0

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Function output (C, h, w) -> stored array (stored_channels, h, w). An "rgb" output may
        also come as uint8 0-255 (rounded on the model's device), which is stored as it is."""
        if self.kind == "rgb":
            out = np.empty((self.stored_channels, *values.shape[1:]), np.uint8)
            out[-1] = 255
            if values.dtype == np.uint8:
                out[:-1] = values
            else:
                scaled = np.asarray(values, np.float32) * np.float32(255.0)
                np.clip(np.rint(scaled, out=scaled), 0, 255, out=scaled)
                out[:-1] = scaled
            return out
        return np.asarray(values).astype(self.dtype)

    def background_block(self, h: int, w: int) -> np.ndarray:
        """Stored array for a background tile of (h, w) px."""
        value = np.asarray(self.background, np.float32).reshape(-1, 1, 1)
        return self.encode(np.broadcast_to(value, (self.channels, h, w)))

    def downsample(self, block: np.ndarray) -> np.ndarray:
        """2x downsampling used for this output's pyramid (labels keep their ids)."""
        if self.integer:
            return block[:, ::2, ::2]
        return downsample_2x(block)


def remove_store(path: Path) -> None:
    """Delete output store ``path`` for a new run; anything but a vstain store is refused."""
    if not is_output_store(path):
        raise OutputExistsError(
            f"{path} exists and is not a vstain output store; vstain only replaces its own "
            "outputs. Choose another output path, or move that folder away yourself."
        )
    shutil.rmtree(path)


class OutputStore:
    """Open output store; see the module docstring for its layout."""

    def __init__(self, path: Path, specs: list[OutputSpec], tile: int, concurrent: bool = False):
        self.path = Path(path)
        self.concurrent = concurrent
        self.specs = {s.name: s for s in specs}
        self.tile = tile
        self.root = zarr.open_group(self.path, mode="r+")
        self.levels = {
            name: open_ome_zarr_levels(self.path / name, mode="r+") for name in self.specs
        }
        self.done = self.root["done"]
        self.edges = self._edges()
        self.block = int(self.done.chunks[0])
        self._io = {name: [ChunkIO(a) for a in levels] for name, levels in self.levels.items()}
        self._cells_io = {"done": ChunkIO(self.done)}
        self._cells_io.update({name: ChunkIO(a) for name, a in self.edges.items()})
        self._coarse = CoarseChunks(
            lambda key: self._io[key[0]][key[1]].read((0, *key[2:])),
            lambda key, chunk: self._io[key[0]][key[1]].write((0, *key[2:]), chunk),
        )
        self._waiting: list[tuple[tuple[int, int], int, list]] = []  # flags awaiting chunks
        self._unflagged = 0  # tiles written whose done flags are not (guarded by _lock)
        self._background: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()  # guards the queues below: tiles are written on threads
        self._flush_lock = threading.Lock()  # one flush at a time (read-modify-writes)
        self._last_flush = time.monotonic()
        self._pending: dict[tuple, list] = {}
        self._pending_done: list[tuple[tuple[int, int], int, list]] = []
        self._pending_edges: dict[str, list[tuple[tuple[int, int], np.ndarray]]] = {}

    def _edges(self) -> dict:
        """The border-id arrays of the "instances" outputs."""
        names = [name for name, spec in self.specs.items() if spec.kind == "instances"]
        try:
            return {name: self.root["edges"][name] for name in names}
        except KeyError as e:
            raise OutputExistsError(
                f"{self.path} was made by an older vstain that kept no tile border ids; "
                "use --overwrite to replace it or choose another output path."
            ) from e

    @property
    def settings(self) -> dict:
        return dict(self.root.attrs["vstain"])

    @classmethod
    def create(
        cls,
        path,
        *,
        shape: tuple[int, int],
        tile: int,
        specs: list[OutputSpec],
        pixel_size: float | None,
        settings: dict,
        overwrite: bool = False,
        n_levels: int | None = None,
        done_block: int = DONE_BLOCK,
    ) -> OutputStore:
        """Create an empty store for an image of ``shape`` (Y, X); pyramid depth as the writers'
        default (down to a few hundred px) unless ``n_levels`` is given. ``done_block`` tiles per
        side of a done-map chunk: the block one concurrent writer owns."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise OutputExistsError(
                    f"{path} exists. Use --resume to continue that run or --overwrite to "
                    "replace it."
                )
            remove_store(path)
        root = zarr.open_group(path, mode="w")
        for spec in specs:
            create_ome_zarr(
                path / spec.name,
                shape,
                spec.stored_channels,
                spec.dtype,
                chunk=tile,
                pixel_size=pixel_size,
                n_levels=n_levels,
                fill_value=spec.fill_value,
                name=spec.name,
                overwrite=True,
            )
        rows, cols = (-(-s // tile) for s in shape)
        root.create_array(
            "done",
            shape=(rows, cols),
            dtype="uint8",
            chunks=(done_block, done_block),
            fill_value=PENDING,
        )
        edges = root.create_group("edges")
        for spec in specs:
            if spec.kind == "instances":
                edges.create_array(
                    spec.name,
                    shape=(rows, cols, 4, tile),
                    dtype="int64",
                    chunks=(done_block, done_block, 4, tile),
                    fill_value=0,
                )
        settings = {
            **settings,
            "shape": list(shape),
            "tile": tile,
            "outputs": [asdict(s) for s in specs],
        }
        root.attrs["vstain"] = json.loads(json.dumps(settings))
        return cls(path, specs, tile)

    @classmethod
    def open(cls, path, *, concurrent: bool = False) -> OutputStore:
        """Open an existing store (to resume it or read its progress); ``concurrent`` when other
        processes write other blocks of it at the same time (see `shared_factor`)."""
        path = Path(path)
        try:
            attrs = dict(zarr.open_group(path, mode="r").attrs)["vstain"]
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as e:
            raise VstainError(f"{path} is not a vstain output store ({e}).") from e
        try:
            specs = [OutputSpec(**s) for s in attrs["outputs"]]
            return cls(path, specs, attrs["tile"], concurrent)
        except (KeyError, TypeError, SlideError) as e:  # a part deleted or rewritten
            raise VstainError(
                f"{path} is a damaged vstain output store ({type(e).__name__}: {e}); use "
                "--overwrite to compute it again."
            ) from e

    def check_settings(self, expected: dict) -> None:
        """Refuse to resume a store made with other settings (source, tile, model...)."""
        have = self.settings
        diff = [k for k, v in expected.items() if json.loads(json.dumps(v)) != have.get(k)]
        if diff:
            raise OutputExistsError(
                f"{self.path} was made with other settings ({', '.join(diff)} differ); "
                "use --overwrite to replace it or choose another output path."
            )

    @property
    def shared_factor(self) -> int:
        """Coarsest downsample factor whose chunks each tile updates itself: the tile size, or
        for a concurrent writer the largest power of two dividing its block, so that it never
        touches a coarse chunk another block shares. Coarser levels come from `build_levels`."""
        return min(self.tile, self.block & -self.block) if self.concurrent else self.tile

    def done_map(self) -> np.ndarray:
        return np.asarray(self.done[:])

    def _coarse_keys(self, tile: Tile) -> list[tuple]:
        """(output, level, chunk row, chunk column) of the coarse chunks ``tile`` updates."""
        x0, y0 = tile.core[:2]
        return [
            (name, k, (y0 >> k) // self.tile, (x0 >> k) // self.tile)
            for name, levels in self.levels.items()
            for k in range(1, len(levels))
            if 2**k <= self.shared_factor
        ]

    def expect(self, tiles: list[Tile]) -> None:
        """Announce the tiles a run will write, so each coarse chunk is written once, when its
        last tile arrives (without this, after `FLUSH_MAX_TILES` tiles or 5 s)."""
        self._coarse.expect(key for t in tiles for key in self._coarse_keys(t))

    def write_tile(self, tile: Tile, outputs: dict[str, np.ndarray], state: int = COMPUTED) -> None:
        """Write a tile's stored arrays (C, h, w) at its core now; queue its share of the coarser
        levels and its done flag for the next :meth:`flush` (about once a second). Tiles may be
        written from several threads at once (each tile is its own chunk)."""
        x0, y0 = tile.core[:2]
        row, col = tile.index
        keys, shares, edges = self._coarse_keys(tile), [], []
        for name, block in outputs.items():
            spec, levels = self.specs[name], self.levels[name]
            if spec.kind == "instances":
                block = slide_ids(block, tile.index, self.tile, self.done.shape[1])
                edges.append((name, core_edges(block, self.tile)))
            self._io[name][0].write((0, row, col), block)
            for k in range(1, len(levels)):
                if 2**k > self.shared_factor:
                    break
                block = spec.downsample(block)
                shares.append((name, k, y0 >> k, x0 >> k, block))
        with self._lock:
            for name, k, ky, kx, block in shares:
                key = (name, k, ky // self.tile, kx // self.tile)
                self._pending.setdefault(key, []).append((ky, kx, block))
            for name, value in edges:
                self._pending_edges.setdefault(name, []).append((tile.index, value))
            self._pending_done.append((tile.index, state, keys))
            self._unflagged += 1
            force = self._unflagged >= FLUSH_MAX_TILES
            due = force or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if force:  # flags may lag at most FLUSH_MAX_TILES tiles: wait for a flush under way
            with self._flush_lock:
                self._flush(force)
        elif due and self._flush_lock.acquire(blocking=False):  # else a flush is under way
            try:
                self._flush(force)
            finally:
                self._flush_lock.release()

    def flush(self) -> None:
        """Write every queued pyramid share, then the tiles' border ids and done flags, so a
        flag never claims a tile whose writes are not on disk."""
        with self._flush_lock:
            self._flush(force=True)

    def _flush(self, force: bool) -> None:
        """Paste queued shares into their coarse chunks and write those that are due (all with
        ``force``: when `FLUSH_MAX_TILES` flags wait); then the flags whose chunks are written."""
        with self._lock:
            shares, self._pending = self._pending, {}
            edges, self._pending_edges = self._pending_edges, {}
            done, self._pending_done = self._pending_done, []
            self._last_flush = time.monotonic()
        for key, parts in shares.items():
            self._coarse.add(key, parts, (key[2] * self.tile, key[3] * self.tile))
        waiting = self._waiting + done
        self._coarse.write_due(force)
        for name, items in edges.items():
            self._write_grid_cells(self._cells_io[name], items)
        ready = [not any(self._coarse.is_dirty(k) for k in keys) for _, _, keys in waiting]
        self._waiting = [w for w, r in zip(waiting, ready, strict=True) if not r]
        flags = [(index, state) for (index, state, _), r in zip(waiting, ready, strict=True) if r]
        self._write_grid_cells(self._cells_io["done"], flags)
        with self._lock:
            self._unflagged -= len(flags)
        release_free_memory()

    def _write_grid_cells(self, io: ChunkIO, items: list[tuple[tuple[int, int], object]]) -> None:
        """Set ``array[row, col] = value`` for each ((row, col), value) of a per-tile array
        chunked like the done-map: one read-modify-write per chunk."""
        b, blocks = self.block, {}
        for (r, c), value in items:
            blocks.setdefault((r // b, c // b), []).append((r, c, value))
        rest = (0,) * (io.array.ndim - 2)
        for (br, bc), cells in blocks.items():
            block = io.read((br, bc, *rest))
            for r, c, value in cells:
                block[r - br * b, c - bc * b] = value
            io.write((br, bc, *rest), block)

    def write_background(self, tile: Tile) -> None:
        x0, y0, x1, y1 = tile.core
        shape = (y1 - y0, x1 - x0)
        blocks = self._background.get(shape)
        if blocks is None:  # made once per tile shape: write_tile only reads them
            blocks = {n: s.background_block(*shape) for n, s in self.specs.items()}
            self._background[shape] = blocks
        self.write_tile(tile, blocks, BACKGROUND)

    def finish(self) -> None:
        """Flush; then, unless other writers may still be at work (``concurrent``), `complete`."""
        self.flush()
        if not self.concurrent:
            self.complete()

    def complete(self) -> None:
        """Work that needs every writer's tiles: join objects cut by tile borders, then build the
        levels coarser than `shared_factor` (for the levels concurrent writers left, open the
        store with ``concurrent=True``)."""
        self._coarse.clear()  # both rewrite chunks; `finish` wrote every held one
        self.merge_instances()
        self.build_levels()

    def merge_instances(self) -> None:
        """Give each object of an "instances" output cut by tile borders one id (see
        `vstain.tiles.instances`) in every level's chunks that hold its parts."""
        t, (rows, columns) = self.tile, self.done.shape
        for name, edges in self.edges.items():
            ids, objects = merged_ids(border_pairs(edges, rows))
            if not len(ids):
                continue
            levels, chunks = self.levels[name], set()
            for r, c in set(tile_of(ids, t, columns)):
                for k in range(len(levels)):
                    ys = {(r * t) >> k, ((r + 1) * t - 1) >> k}
                    xs = {(c * t) >> k, ((c + 1) * t - 1) >> k}
                    chunks.update((k, y // t, x // t) for y in ys for x in xs)
            for k, row, col in sorted(chunks):
                region = (slice(None), slice(row * t, (row + 1) * t), slice(col * t, (col + 1) * t))
                block = np.asarray(levels[k][region])
                merged = relabel(block, ids, objects)
                if not np.array_equal(merged, block):
                    levels[k][region] = merged

    def build_levels(self) -> None:
        """Rebuild every level coarser than `shared_factor` from the one above, chunk by chunk."""
        t = self.tile
        for name, spec in self.specs.items():
            levels = self.levels[name]
            for k in range(1, len(levels)):
                if 2**k <= self.shared_factor:
                    continue
                above, level = levels[k - 1], levels[k]
                for y in range(0, level.shape[1], t):
                    for x in range(0, level.shape[2], t):
                        source = np.asarray(above[:, 2 * y : 2 * (y + t), 2 * x : 2 * (x + t)])
                        level[:, y : y + t, x : x + t] = spec.downsample(source)
