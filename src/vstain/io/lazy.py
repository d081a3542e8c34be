"""Dask arrays over file-backed arrays, with decoding errors reported as `SlideError`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from vstain.errors import SlideError, VstainError


class GuardedSource:
    """Array-like over ``source`` (a zarr array or anything sliceable) for `dask.array.from_array`.

    A failure to read or decode a block (a corrupt tile or chunk, an unreadable file) becomes a
    `SlideError` naming the file, instead of a codec or zarr exception deep inside dask.
    """

    def __init__(self, source: Any, path: Path):
        self.source = source
        self.path = path
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.asarray(self.source[key])
        except (VstainError, MemoryError):
            raise
        except Exception as e:
            raise SlideError(
                f"Cannot decode pixels of {self.path}: {type(e).__name__}: {e}. The file is "
                "corrupt or truncated; copy or export it again."
            ) from e


def lazy_array(source: Any, path: Path, chunks: tuple[int, ...], label: str) -> da.Array:
    """Dask array reading ``source`` block by block; ``label`` distinguishes arrays of one file."""
    stat = path.stat()
    token = tokenize(str(path), stat.st_mtime_ns, stat.st_size, label)
    name = f"vstain-{path.name}-{label}-{token}"
    guarded = GuardedSource(source, path)
    meta = np.empty((0,) * guarded.ndim, guarded.dtype)  # so dask does not index the source
    return da.from_array(guarded, chunks=chunks, name=name, lock=False, meta=meta)
