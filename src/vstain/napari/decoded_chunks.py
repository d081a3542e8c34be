"""An output store's levels as napari reads them, from decoded chunks kept in memory.

A refresh of a layer over the zarr store re-read and re-decompressed every chunk in view on the
main thread (about 50 ms for a 1600 x 1000 canvas here, each time tiles land). Here each chunk is
decoded once; tiles the staining process finishes arrive with their stored pixels (its level-0
chunk and its shares of the coarser levels, `vstain.pipeline.worker.TileDone`) and are pasted in,
so slicing a refreshed layer copies memory and decodes nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from vstain.tiles.chunkio import ChunkIO

#: Decoded chunks kept per output (bytes): 256 chunks of a 512 px RGBA tile.
BUDGET = 256 * 2**20


class DecodedChunks:
    """Decoded chunks (C, t, t) of one output's levels, least recently used dropped first.
    Shares of chunks not in memory wait in ``pending`` until the chunk is read (the store has
    them only once the engine flushes its coarse chunks)."""

    def __init__(self, arrays: list, budget: int = BUDGET):
        self.io = [ChunkIO(a) for a in arrays]
        self.shapes = [tuple(a.shape) for a in arrays]
        self.budget = budget
        self.chunks: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self.pending: dict[tuple[int, int, int], list] = {}
        self._bytes = 0

    def chunk(self, key: tuple[int, int, int]) -> np.ndarray:
        """The chunk (level, row, column), cut to the level's extent."""
        found = self.chunks.get(key)
        if found is not None:
            self.chunks.move_to_end(key)
            return found
        level, row, col = key
        block = np.array(self.io[level].read((0, row, col)))
        for y, x, share in self.pending.pop(key, ()):
            _paste(block, y, x, share)
        self._keep(key, block)
        return block

    def paste(self, level: int, y: int, x: int, block: np.ndarray) -> None:
        """Pixels (C, h, w) stored at (y, x) of ``level``: a whole chunk replaces it, a share is
        pasted into its chunk (or kept until that chunk is read)."""
        t = self.io[level].chunks[-1]
        key = (level, y // t, x // t)
        oy, ox = y - key[1] * t, x - key[2] * t
        if (oy, ox) == (0, 0) and block.shape == self._extent(key):
            self._keep(key, np.array(block))
        elif key in self.chunks:
            _paste(self.chunks[key], oy, ox, block)
        else:
            self.pending.setdefault(key, []).append((oy, ox, block))

    def forget(self, levels) -> None:
        """Drop the chunks of ``levels`` (the engine rebuilds them when a run finishes)."""
        for key in [k for k in self.chunks if k[0] in levels]:
            self._bytes -= self.chunks.pop(key).nbytes
        for key in [k for k in self.pending if k[0] in levels]:
            del self.pending[key]

    def region(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] of ``level`` as (C, h, w)."""
        c = self.shapes[level][0]
        t = self.io[level].chunks[-1]
        out = np.empty((c, y1 - y0, x1 - x0), self.io[level].array.dtype)
        for row in range(y0 // t, -(-y1 // t)):
            for col in range(x0 // t, -(-x1 // t)):
                block = self.chunk((level, row, col))
                ys = slice(max(y0, row * t), min(y1, row * t + block.shape[1]))
                xs = slice(max(x0, col * t), min(x1, col * t + block.shape[2]))
                out[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = block[
                    :,
                    ys.start - row * t : ys.stop - row * t,
                    xs.start - col * t : xs.stop - col * t,
                ]
        return out

    def _extent(self, key: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, h, w) of a chunk cut to its level's extent."""
        level, row, col = key
        c, y, x = self.shapes[level]
        t = self.io[level].chunks[-1]
        return c, min(t, y - row * t), min(t, x - col * t)

    def _keep(self, key, block: np.ndarray) -> None:
        old = self.chunks.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self.chunks[key] = block
        self._bytes += block.nbytes
        while self._bytes > self.budget and len(self.chunks) > 1:
            self._bytes -= self.chunks.popitem(last=False)[1].nbytes


def _paste(chunk: np.ndarray, y: int, x: int, share: np.ndarray) -> None:
    h = min(share.shape[1], chunk.shape[1] - y)
    w = min(share.shape[2], chunk.shape[2] - x)
    chunk[:, y : y + h, x : x + w] = share[:, :h, :w]


class CachedLevel:
    """One level of a cached output as a napari layer's data: (Y, X, C) for an RGB output,
    (Y, X) of the first channel otherwise. Any numpy index works; only the chunks under it are
    read."""

    def __init__(self, cache: DecodedChunks, level: int, rgb: bool):
        self.cache, self.level, self.rgb = cache, level, rgb
        c, y, x = cache.shapes[level]
        self.shape = (y, x, c) if rgb else (y, x)
        self.dtype = np.dtype(cache.io[level].array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key, self.ndim)
        (y0, y1, ky), (x0, x1, kx) = (
            _bounds(k, n) for k, n in zip(key[:2], self.shape[:2], strict=True)
        )
        block = self.cache.region(self.level, y0, y1, x0, x1)
        view = block.transpose(1, 2, 0) if self.rgb else block[0]
        return view[(ky, kx, *key[2:])]

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype)


def _full_key(key, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    return key + (slice(None),) * (ndim - len(key))


def _bounds(key, n: int) -> tuple[int, int, object]:
    """(start, stop) of the pixels ``key`` needs along an axis of ``n``, and ``key`` relative to
    start."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step > 0:
            stop = max(stop, start)
            return start, stop, slice(0, stop - start, step)
    elif isinstance(key, int | np.integer):
        index = int(key) + n if key < 0 else int(key)
        return index, index + 1, 0
    return 0, n, key
