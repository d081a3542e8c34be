"""2x mean downsampling and image pyramids, shared by the readers, the writers and the tile engine.

Every pyramid in vstain is built by `downsample_2x`, so a pyramid built tile by tile (writers,
engine) equals one built from a whole level: level k+1 has ``ceil(n / 2)`` pixels per side, each
the mean of its 2 x 2 block, rounded half up for integers; on an odd last row or column the
mean is over the pixels that exist.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
import zarr

#: Single-level slides (or pyramids whose coarsest level is) larger than this get lazy levels.
LAZY_PYRAMID_ABOVE = 4096
#: Lazy reader pyramids stop at a level whose longer side is at most this.
LAZY_PYRAMID_MIN = 512
#: Smallest chunk side of lazily computed levels (smaller chunks make too many dask tasks).
LAZY_MIN_CHUNK = 256


def downsample_2x(tile: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Mean-downsample a 3-D (C, Y, X) or, with ``channel_axis=-1``, (Y, X, C) array by 2.

    Integers are averaged exactly and rounded half up; floats keep their dtype (NaN propagates).
    Odd sizes give ``ceil(n / 2)`` pixels; edge pixels average the pixels that exist.
    """
    if tile.ndim != 3:
        raise ValueError(f"downsample_2x needs a 3-D array, got shape {tile.shape}")
    a = np.moveaxis(tile, channel_axis, 0)  # (C, Y, X): the engine's layout needs no moving
    h, w = a.shape[1:]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    integer = np.issubdtype(a.dtype, np.integer)
    if not integer:
        acc_dtype = a.dtype
    elif a.dtype.itemsize == 1:  # four 8-bit values sum exactly in 16 bits
        acc_dtype = np.uint16 if a.dtype.kind == "u" else np.int16
    else:
        acc_dtype = np.int32 if a.dtype.itemsize == 2 else np.int64
    total = a[:, 0::2, 0::2].astype(acc_dtype)
    for dy, dx in ((1, 0), (0, 1), (1, 1)):
        total += a[:, dy::2, dx::2]
    if integer:
        total += 2
        total //= 4
    else:
        total /= 4
    return np.moveaxis(total.astype(tile.dtype, copy=False), 0, channel_axis)


def half(shape_yx: tuple[int, int]) -> tuple[int, int]:
    """Shape of the next pyramid level: ``ceil(n / 2)`` per side."""
    return (-(-shape_yx[0] // 2), -(-shape_yx[1] // 2))


def pyramid_shapes(
    shape_yx: tuple[int, int], max_size: int, n_levels: int | None = None
) -> list[tuple[int, int]]:
    """Level shapes halving from ``shape_yx``: ``n_levels`` of them, or down to a level whose
    longer side is at most ``max_size`` (at least one level)."""
    shapes = [(int(shape_yx[0]), int(shape_yx[1]))]
    if n_levels is not None:
        while len(shapes) < n_levels:
            shapes.append(half(shapes[-1]))
    else:
        while max(shapes[-1]) > max_size:
            shapes.append(half(shapes[-1]))
    return shapes


def lazy_half(level: da.Array) -> da.Array:
    """Next pyramid level of a (Y, X, C) dask level, computed block by block when read."""
    side = max(LAZY_MIN_CHUNK, *level.chunksize[:2])
    side += side % 2
    source = level.rechunk((2 * side, 2 * side, -1))
    chunks = (*(tuple(-(-c // 2) for c in cs) for cs in source.chunks[:2]), source.chunks[2])
    return source.map_blocks(downsample_2x, channel_axis=-1, chunks=chunks, dtype=level.dtype)


def extend_lazy_pyramid(levels: list[da.Array]) -> list[da.Array]:
    """Add lazy levels below the coarsest one when it is larger than `LAZY_PYRAMID_ABOVE` px,
    down to a level whose longer side is at most `LAZY_PYRAMID_MIN` px."""
    levels = list(levels)
    if max(levels[-1].shape[:2]) <= LAZY_PYRAMID_ABOVE:
        return levels
    while max(levels[-1].shape[:2]) > LAZY_PYRAMID_MIN:
        levels.append(lazy_half(levels[-1]))
    return levels


def fill_downsampled(
    source: zarr.Array, target: zarr.Array, on_chunk: Callable[[], None] | None = None
) -> None:
    """Write ``target`` (C, Y, X), the 2x downsampling of ``source``, one target chunk at a time.

    Each target chunk reads only the 2 x 2 source chunks under it, so memory stays bounded.
    """
    _, height, width = target.shape
    cy, cx = target.chunks[1:]
    for y0 in range(0, height, cy):
        for x0 in range(0, width, cx):
            block = source[:, 2 * y0 : 2 * (y0 + cy), 2 * x0 : 2 * (x0 + cx)]
            target[:, y0 : y0 + cy, x0 : x0 + cx] = downsample_2x(block)
            if on_chunk is not None:
                on_chunk()
