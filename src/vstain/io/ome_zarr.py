"""OME-Zarr (NGFF 0.5, zarr v3) images: create empty, open, and write slides tile by tile.

An image is a zarr group whose arrays "0", "1", ... are the pyramid levels, each (C, Y, X) with
chunks (C, chunk, chunk), level k+1 half of level k (ceil). Writing never holds more than a window
of `WINDOW_CHUNKS` x `WINDOW_CHUNKS` chunks of a level in memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from vstain.errors import SlideError
from vstain.io.ngff import find_multiscales, multiscales_attrs, structure_problem
from vstain.io.pyramid import fill_downsampled, half, pyramid_shapes
from vstain.io.writing import (
    ImageLike,
    Progress,
    ProgressCallback,
    as_levels,
    check_output,
    chunk_count,
)

#: Written pyramids go down to a level whose longer side is at most this (napari caches the
#: coarsest level, so it must be small).
OUTPUT_PYRAMID_MIN = 256
#: Side of the window of a source level computed at once while writing, in chunks.
WINDOW_CHUNKS = 4


def is_output_store(path) -> bool:
    """Whether ``path`` is a store vstain's tile engine made (a zarr group with vstain settings)."""
    try:
        return "vstain" in zarr.open_group(Path(path), mode="r").attrs
    except Exception:  # anything unreadable is not one of ours
        return False


def create_ome_zarr(
    path: str | Path,
    shape_yx: tuple[int, int],
    channels: int,
    dtype: np.typing.DTypeLike,
    *,
    chunk: int = 512,
    pixel_size: float | None = None,
    n_levels: int | None = None,
    fill_value: float = 0,
    name: str = "image",
    channel_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[zarr.Array]:
    """Create an empty NGFF 0.5 multiscale image and return its level arrays (C, Y, X).

    ``n_levels`` defaults to halving down to a level whose longer side is at most 256 px.
    ``pixel_size`` (um/px at level 0) gives micrometre scales; without it scales are unitless.
    Raises `OutputExistsError` if ``path`` exists, unless ``overwrite``.
    """
    if min(shape_yx) < 1 or (n_levels is not None and n_levels < 1):
        raise SlideError(
            f"Cannot create {path}: shape {shape_yx} and n_levels {n_levels} must be positive."
        )
    shapes = pyramid_shapes(shape_yx, OUTPUT_PYRAMID_MIN, n_levels)
    factors = [(2.0**k, 2.0**k) for k in range(len(shapes))]
    return _create_image(
        Path(path),
        shapes,
        factors,
        channels,
        dtype,
        chunk,
        pixel_size,
        fill_value,
        name,
        channel_names,
        overwrite,
    )


def open_ome_zarr_levels(path: str | Path, mode: str = "r") -> list[zarr.Array]:
    """Level arrays of the OME-Zarr image at ``path`` (any NGFF version), full resolution first."""
    group = open_group(Path(path), mode)
    found = find_multiscales(group.attrs.asdict())
    if found is None:
        raise SlideError(
            f"{path} is a zarr group without OME-NGFF multiscales metadata; open the image "
            "group inside it (e.g. out.zarr/ihc)."
        )
    return level_arrays(group, found[0], Path(path))


def level_arrays(group: zarr.Group, multiscale: object, path: Path) -> list[zarr.Array]:
    """The arrays a multiscales entry of ``group`` names; `SlideError` if the entry is invalid
    or a level is missing or damaged."""
    problem = structure_problem(multiscale)
    if problem:
        raise SlideError(
            f"{path} has invalid OME-NGFF multiscales metadata: {problem}. Write the image again."
        )
    arrays = []
    for d in multiscale["datasets"]:
        try:
            array = group[d["path"]]
        except Exception as e:  # zarr raises many types for missing or damaged metadata
            raise SlideError(
                f"{path}: level {d['path']!r} cannot be opened ({type(e).__name__}: {e}). The "
                "OME-Zarr image is damaged or incomplete; copy or write it again."
            ) from e
        if not isinstance(array, zarr.Array):
            raise SlideError(f"{path}: level {d['path']!r} is a group, not an array.")
        arrays.append(array)
    return arrays


def open_group(path: Path, mode: str = "r") -> zarr.Group:
    """Open the zarr group at ``path``; `SlideError` if there is none or it is damaged."""
    try:
        return zarr.open_group(path, mode=mode)
    except Exception as e:  # zarr raises many types for missing or damaged metadata
        raise SlideError(
            f"{path} is not a zarr group ({type(e).__name__}: {e}). Give the path of an OME-Zarr "
            "image (the folder holding zarr.json or .zattrs)."
        ) from e


def write_ome_zarr(
    image: ImageLike,
    path: str | Path,
    *,
    pixel_size: float | None = None,
    chunk: int = 512,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> list[zarr.Array]:
    """Write a slide (a `Slide`, a list of (Y, X, 3) uint8 levels, or one such array) as OME-Zarr.

    Given levels are written as they are; below the coarsest, levels are computed tile by tile
    from the level already written, down to a longer side of at most 256 px. ``pixel_size``
    defaults to the Slide's. ``progress(done, total)`` is called after every chunk.
    """
    levels, pixel_size = as_levels(image, pixel_size)
    shapes, _ = pyramid_plan(levels)
    counter = Progress(sum(chunk_count(s, chunk) for s in shapes), progress)
    return write_pyramid(levels, Path(path), chunk, pixel_size, overwrite, counter)


def pyramid_plan(levels: list[da.Array]) -> tuple[list[tuple[int, int]], list[tuple[float, float]]]:
    """Shapes and (y, x) downsample factors of the levels a writer produces from ``levels``."""
    h0, w0 = levels[0].shape[:2]
    shapes = [tuple(level.shape[:2]) for level in levels]
    factors = [(h0 / h, w0 / w) for h, w in shapes]
    while max(shapes[-1]) > OUTPUT_PYRAMID_MIN:
        shapes.append(half(shapes[-1]))
        factors.append((2 * factors[-1][0], 2 * factors[-1][1]))
    return shapes, factors


def write_pyramid(
    levels: list[da.Array],
    path: Path,
    chunk: int,
    pixel_size: float | None,
    overwrite: bool,
    counter: Progress,
) -> list[zarr.Array]:
    """Write ``levels`` and the levels computed below them (see `pyramid_plan`) to ``path``."""
    shapes, factors = pyramid_plan(levels)
    arrays = _create_image(
        path, shapes, factors, 3, np.uint8, chunk, pixel_size, 0, "image", None, overwrite
    )
    for level, array in zip(levels, arrays, strict=False):
        _copy_level(level, array, counter)
    for k in range(len(levels), len(arrays)):
        fill_downsampled(arrays[k - 1], arrays[k], counter.step)
    return arrays


def _copy_level(level: da.Array, array: zarr.Array, counter: Progress) -> None:
    """Write a (Y, X, C) dask level into a (C, Y, X) zarr array, one window at a time."""
    height, width = level.shape[:2]
    cy, cx = array.chunks[1:]
    wy, wx = cy * WINDOW_CHUNKS, cx * WINDOW_CHUNKS
    for y0 in range(0, height, wy):
        for x0 in range(0, width, wx):
            window = level[y0 : y0 + wy, x0 : x0 + wx].compute()
            array[:, y0 : y0 + wy, x0 : x0 + wx] = np.moveaxis(window, -1, 0)
            counter.step(chunk_count(window.shape[:2], cy))


def _create_image(
    path: Path,
    shapes: list[tuple[int, int]],
    factors: list[tuple[float, float]],
    channels: int,
    dtype: np.typing.DTypeLike,
    chunk: int,
    pixel_size: float | None,
    fill_value: float,
    name: str,
    channel_names: Sequence[str] | None,
    overwrite: bool,
) -> list[zarr.Array]:
    check_output(path, overwrite)
    if channels < 1 or chunk < 1:
        raise SlideError(
            f"Cannot create {path}: {channels} channels and chunk {chunk} must be >= 1."
        )
    if channel_names is not None and len(channel_names) != channels:
        raise SlideError(
            f"Cannot create {path}: {len(channel_names)} channel names for {channels} channels."
        )
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs.update(multiscales_attrs(factors, pixel_size, name, channel_names))
    return [
        group.create_array(
            str(k),
            shape=(channels, *shape),
            chunks=(channels, chunk, chunk),
            dtype=dtype,
            fill_value=fill_value,
            dimension_names=("c", "y", "x"),
        )
        for k, shape in enumerate(shapes)
    ]
