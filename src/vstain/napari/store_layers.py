"""napari layers over a tile engine output store, placed exactly over the slide they stain.

The store's arrays are read lazily and without napari's dask cache, so `refresh` shows the tiles
the staining thread has written since.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from vstain.io import open_ome_zarr_levels
from vstain.tiles import OutputSpec, OutputStore
from vstain.tiles.store import COMPUTED

#: Layer name suffix per output.
SUFFIXES = {
    "ihc": "virtual IHC",
    "uncertainty": "uncertainty",
    "segmentation": "segmentation",
    "keypoints": "keypoints",
}
KEYPOINT_STYLE = {"face_color": "yellow", "border_color": "black", "size": 8}
#: Uncertainty is in the IHC's [0, 1] intensity units.
UNCERTAINTY_LIMITS = (0.0, 1.0)


def aligned_placement(reference, downsample: float) -> dict:
    """scale / translate / units putting a level downsampled by ``downsample`` over ``reference``.

    Pixel j of the level covers pixels [j * d, (j + 1) * d) of the reference, whose pixel centres
    lie at integer data coordinates; so the translate moves by (d - 1) / 2 reference pixels.
    """
    scale = np.asarray(reference.scale[-2:], dtype=float)
    translate = np.asarray(reference.translate[-2:], dtype=float) + scale * (downsample - 1) / 2
    return {
        "scale": tuple(scale * downsample),
        "translate": tuple(translate),
        "units": tuple(str(u) for u in reference.units[-2:]),
    }


def _lazy_levels(store: Path, spec: OutputSpec) -> list[da.Array]:
    """The output's levels as (C, Y, X) dask arrays over the zarr arrays (read when sliced)."""
    arrays = open_ome_zarr_levels(store / spec.name)
    return [
        da.from_array(
            a,
            chunks=a.chunks,
            lock=False,
            name=f"vstain-output-{store}-{spec.name}-{k}",
            meta=np.empty((0,) * a.ndim, a.dtype),
        )
        for k, a in enumerate(arrays)
    ]


def output_layer_data(store: Path, spec: OutputSpec, name: str, placement: dict) -> tuple:
    """(data, kwargs, layer type) of one stored output: RGBA image, scalar image or labels."""
    levels = _lazy_levels(store, spec)
    if spec.kind == "rgb":
        data, kwargs, kind = [a.transpose(1, 2, 0) for a in levels], {"rgb": True}, "image"
    elif spec.kind == "scalar":
        data = [a[0] for a in levels]
        kwargs = {"colormap": "magma", "contrast_limits": UNCERTAINTY_LIMITS}
        kind = "image"
    else:
        data, kwargs, kind = [a[0] for a in levels], {}, "labels"
    kwargs |= {
        "name": name,
        "multiscale": len(data) > 1,
        "cache": False,
        "metadata": {"vstain_store": str(store), "vstain_output": spec.name},
        **placement,
    }
    return (data if len(data) > 1 else data[0]), kwargs, kind


class KeypointSource:
    """Keypoints of a store's finished tiles as (y, x) pixels of its level 0; each tile's chunk
    is read once, when its done flag is first seen, so refreshing costs only the new tiles."""

    def __init__(self, store: Path):
        self.store = Path(store)
        self._seen: set[tuple[int, int]] = set()
        self._points: list[np.ndarray] = [np.empty((0, 2))]

    def points(self) -> np.ndarray:
        group = zarr.open_group(self.store, mode="r")
        tile = int(group.attrs["vstain"]["tile"])
        done = np.asarray(group["done"][:])
        raster = open_ome_zarr_levels(self.store / "keypoints")[0]
        for i, j in zip(*np.nonzero(done == COMPUTED), strict=True):
            if (i, j) in self._seen:
                continue
            ys, xs = np.nonzero(raster[0, i * tile : (i + 1) * tile, j * tile : (j + 1) * tile])
            self._points.append(np.stack([ys + i * tile, xs + j * tile], axis=1).astype(float))
            self._seen.add((i, j))
        return np.concatenate(self._points)


def _add_keypoints(viewer, store: Path, name: str, placement: dict):
    source = KeypointSource(store)
    layer = viewer.add_points(
        source.points(),
        name=name,
        metadata={"vstain_store": str(store), "vstain_output": "keypoints"},
        **KEYPOINT_STYLE,
        **placement,
    )
    layer.metadata["vstain_keypoints"] = source
    return layer


def find_output_layer(viewer, store: Path, output: str):
    """The viewer's layer showing ``output`` of ``store``, or None."""
    for layer in viewer.layers:
        meta = layer.metadata
        if meta.get("vstain_store") == str(store) and meta.get("vstain_output") == output:
            return layer
    return None


def show_outputs(viewer, store: Path, reference, downsample: float, prefix: str) -> list:
    """Layers of every output in ``store`` (added if missing), aligned to ``reference``."""
    placement = aligned_placement(reference, downsample)
    layers = []
    for spec in OutputStore.open(store).specs.values():
        layer = find_output_layer(viewer, store, spec.name)
        name = f"{prefix} {SUFFIXES.get(spec.name, spec.name)}"
        if layer is None and spec.name == "keypoints":
            layer = _add_keypoints(viewer, store, name, placement)
        elif layer is None:
            data, kwargs, kind = output_layer_data(store, spec, name, placement)
            layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        layers.append(layer)
    return layers


def refresh(layers: list, *, final: bool = False) -> None:
    """Show newly written tiles (and, when ``final``, update thumbnails too)."""
    for layer in layers:
        if "vstain_keypoints" in layer.metadata:
            layer.data = layer.metadata["vstain_keypoints"].points()
        else:
            layer.refresh(thumbnail=final, extent=False, highlight=False)
