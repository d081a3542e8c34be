"""OME-Zarr slides: NGFF 0.5 (zarr v3, attributes["ome"]) and 0.4 or older (zarr v2 .zattrs).

Levels are the multiscales datasets, chunked like the zarr arrays; axes come from the metadata,
so (c, y, x), (y, x, c) and leading length-1 t / z axes all work. A vstain output store (a group of
several images) opens its "ihc" image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import zarr

from vstain.errors import SlideError
from vstain.io.lazy import lazy_array
from vstain.io.ngff import axes_of, dataset_scales, find_multiscales
from vstain.io.ome_zarr import open_group
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
    images = sorted(
        name for name, child in group.groups() if find_multiscales(child.attrs.asdict())
    )
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
    arrays = [group[d["path"]] for d in multiscale["datasets"]]
    axes = axes_of(multiscale, arrays[0].ndim)
    if any(a.ndim != len(axes) for a in arrays):
        raise SlideError(
            f"{path}: the multiscales metadata names {len(axes)} axes but the arrays have "
            f"{[a.ndim for a in arrays]} dimensions. The OME-Zarr metadata is invalid."
        )
    names = [name for name, _ in axes]
    levels = [_level(array, names, path) for array in arrays]
    pixel_size, source = _pixel_size(multiscale, axes)
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
    return rgb_uint8_lazy(to_yxc(lazy, axes, {"c"}, path), path)


def _pixel_size(multiscale: dict, axes: list[tuple[str, str | None]]) -> tuple[float | None, str]:
    """Level-0 x scale in micrometres, and where it came from (or why there is none)."""
    names = [name.lower() for name, _ in axes]
    x = names.index("x")
    unit = axes[x][1]
    if unit is None:
        return None, "none: the x axis has no unit"
    scale = dataset_scales(multiscale, len(axes))[0][x]
    pixel_size = to_micrometres(scale, unit)
    if pixel_size is None:
        note = f"none: unknown x axis unit {unit!r}"
        warnings.warn(f"OME-Zarr pixel size unknown ({note}).", stacklevel=4)
        return None, note
    return pixel_size, "NGFF coordinateTransformations scale"
