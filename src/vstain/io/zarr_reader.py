"""OME-Zarr slides: NGFF 0.5 (zarr v3, attributes["ome"]) and 0.4 or older (zarr v2 .zattrs).

Levels are the multiscales datasets, chunked like the zarr arrays; axes come from the metadata,
so (c, y, x), (y, x, c) and leading length-1 t / z axes all work. A vstain output store (a group of
several images) opens its "ihc" image.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import dask.array as da
import zarr

from vstain.errors import SlideError
from vstain.io.lazy import lazy_array
from vstain.io.limits import check_decode, check_sides, shape_yx
from vstain.io.ngff import axes_of, dataset_scales, find_multiscales
from vstain.io.ome_zarr import level_arrays, open_group
from vstain.io.pixels import rgb_uint8_lazy, to_yxc
from vstain.io.slide import Slide
from vstain.io.units import to_micrometres

#: Image opened when a path is a group of images without multiscales of its own (engine output).
DEFAULT_IMAGE = "ihc"


def open_zarr(path: Path) -> Slide:
    """Open the OME-Zarr image at ``path``, or its "ihc" image if ``path`` is a group of images."""
    group = open_group(path)
    if find_multiscales(group.attrs.asdict()) is not None:
        return _open_image(path, group)
    try:
        children = list(group.groups())
    except Exception as e:  # zarr raises many types for damaged metadata
        raise SlideError(
            f"{path}: the images inside cannot be listed ({type(e).__name__}: {e}). The zarr "
            "store is damaged; copy or write it again."
        ) from e
    images = sorted(name for name, child in children if find_multiscales(child.attrs.asdict()))
    if DEFAULT_IMAGE in images:
        return _open_image(path / DEFAULT_IMAGE, group[DEFAULT_IMAGE])
    if images:
        raise SlideError(
            f"{path} holds several images ({', '.join(images)}) and none is named "
            f"'{DEFAULT_IMAGE}'. Open one of them, e.g. {path / images[0]}."
        )
    raise SlideError(
        f"{path} is a zarr group without OME-NGFF multiscales metadata and holds no image. "
        "Give the path of an OME-Zarr image."
    )


def _open_image(path: Path, group: zarr.Group) -> Slide:
    multiscale, version = find_multiscales(group.attrs.asdict())
    arrays = level_arrays(group, multiscale, path)
    axes = axes_of(multiscale, arrays[0].ndim)
    if any(a.ndim != len(axes) for a in arrays):
        raise SlideError(
            f"{path}: the multiscales metadata names {len(axes)} axes but the arrays have "
            f"{[a.ndim for a in arrays]} dimensions. The OME-Zarr metadata is invalid."
        )
    names = [name for name, _ in axes]
    check_sides(path, [shape_yx(a.shape, names) for a in arrays])
    levels = [_level(array, names, path) for array in arrays]
    try:
        scales = dataset_scales(multiscale, len(axes))
    except ValueError as e:
        raise SlideError(
            f"{path}: a scale of the multiscales metadata does not have one entry per axis "
            f"({len(axes)}): {e}. The OME-Zarr metadata is invalid; write the image again."
        ) from e
    check_scales(path, [level.shape[:2] for level in levels], scales, names)
    pixel_size, source = _pixel_size(scales[0], axes)
    metadata = {
        "format": "ome-zarr",
        "ngff_version": version,
        "name": multiscale.get("name"),
        "axes": names,
        "source": str(path),
        "pixel_size_source": source,
    }
    return Slide(path, levels, pixel_size, metadata)


def _level(array: zarr.Array, axes: list[str], path: Path) -> da.Array:
    lazy = lazy_array(array, path, array.chunks, array.path)
    level = to_yxc(lazy, axes, {"c"}, path)
    sizes = dict(zip([a.lower() for a in axes], array.chunks, strict=True))
    per_pixel = array.dtype.itemsize * math.prod(
        n for name, n in sizes.items() if name not in ("y", "x")
    )
    check_decode(path, (sizes["y"], sizes["x"]), per_pixel, f"one chunk of level {array.path}")
    return rgb_uint8_lazy(level, path)


def check_scales(
    path: Path, shapes_yx: list[tuple[int, int]], scales: list[list[float]], axes: list[str]
) -> None:
    """Raise `SlideError` unless every level covers what level 0 covers: along y and x, its size
    times its scale ratio to level 0 is level 0's size, give or take one of its pixels."""
    names = [a.lower() for a in axes]
    for k in range(1, len(shapes_yx)):
        for i, axis in enumerate(("y", "x")):
            ratio = scales[k][names.index(axis)] / scales[0][names.index(axis)]
            n0, nk = shapes_yx[0][i], shapes_yx[k][i]
            if abs(nk * ratio - n0) > ratio + 1e-3 * n0:
                raise SlideError(
                    f"{path}: level 0 is {n0} px along {axis} but level {k}, {nk} px at "
                    f"{ratio:g} times its pixel size, says {nk * ratio:.0f}. The levels disagree "
                    "with their scales; the OME-Zarr metadata is corrupt, write the image again."
                )


def _pixel_size(
    scale0: list[float], axes: list[tuple[str, str | None]]
) -> tuple[float | None, str]:
    """Level-0 x scale in micrometres, and where it came from (or why there is none)."""
    names = [name.lower() for name, _ in axes]
    x = names.index("x")
    unit = axes[x][1]
    if unit is None:
        return None, "none: the x axis has no unit"
    pixel_size = to_micrometres(scale0[x], unit)
    if pixel_size is None:
        note = f"none: unknown x axis unit {unit!r}"
        warnings.warn(f"OME-Zarr pixel size unknown ({note}).", stacklevel=4)
        return None, note
    return pixel_size, "NGFF coordinateTransformations scale"
