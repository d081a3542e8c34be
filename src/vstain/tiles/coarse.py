"""Coarse pyramid chunks held in memory while their tiles arrive, written once when complete.

A chunk of pyramid level k covers 2^k x 2^k tiles. Rewriting it at every flush (once a second)
costs a zstd encoding of a whole chunk each time: about as many coarse encodings as tiles, as
much CPU as the tiles' own chunks. Here a chunk is written when every tile of the run that
touches it has added its share (`expect` counts them), when it has waited `MAX_WAIT_SECONDS`,
when its owner forces it (the done flags of its tiles wait for it), or when the chunks held
exceed `MAX_BYTES` (oldest first). Written chunks stay cached within the same budget, so the
next share need not read and decode them again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

MAX_BYTES = 32 * 2**20
MAX_WAIT_SECONDS = 5.0

Key = tuple  # (output name, level, chunk row, chunk column)


class CoarseChunks:
    """In-memory coarse chunks; ``read(key)`` loads one from disk, ``write(key, chunk)`` saves."""

    def __init__(self, read: Callable[[Key], np.ndarray], write: Callable[[Key, np.ndarray], None]):
        self._read, self._write = read, write
        self._chunks: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._dirty: dict[Key, float] = {}  # key -> when it first changed since written
        self._remaining: dict[Key, int] = {}  # shares still to come this run

    def expect(self, keys: Iterable[Key]) -> None:
        """Count one coming share per key (a key once per tile that touches it)."""
        for key in keys:
            self._remaining[key] = self._remaining.get(key, 0) + 1

    def add(self, key: Key, parts: list[tuple[int, int, np.ndarray]], origin: tuple[int, int]):
        """Paste ``parts`` (y, x, block in level pixels) into the chunk whose corner is
        ``origin``."""
        chunk = self._chunks.pop(key, None)
        chunk = self._read(key) if chunk is None else chunk
        for y, x, block in parts:
            y, x = y - origin[0], x - origin[1]
            chunk[:, y : y + block.shape[1], x : x + block.shape[2]] = block
        self._chunks[key] = chunk
        self._dirty.setdefault(key, time.monotonic())
        if key in self._remaining:
            self._remaining[key] -= len(parts)

    def is_dirty(self, key: Key) -> bool:
        return key in self._dirty

    def write_due(self, force: bool = False) -> None:
        """Write complete, old (and with ``force`` all) changed chunks; keep within budget."""
        now = time.monotonic()
        for key, since in list(self._dirty.items()):
            if force or self._remaining.get(key) == 0 or now - since >= MAX_WAIT_SECONDS:
                self._save(key)
        size = sum(c.nbytes for c in self._chunks.values())
        while size > MAX_BYTES and len(self._chunks) > 1:
            key, chunk = next(iter(self._chunks.items()))
            if key in self._dirty:
                self._save(key)
            del self._chunks[key]
            size -= chunk.nbytes

    def _save(self, key: Key) -> None:
        self._write(key, self._chunks[key])
        del self._dirty[key]

    def clear(self) -> None:
        """Forget held chunks (after `write_due(force=True)`: others rewrite the levels)."""
        self._chunks.clear()
        self._remaining.clear()
