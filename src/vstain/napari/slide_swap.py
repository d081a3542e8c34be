"""Putting the next slide where the last one was: its H&E, real IHC and stored virtual IHC in
the old slide's layers (taken in place when they can) or their places, the camera at the same
relative place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Layer
from qtpy.QtWidgets import QApplication

from vstain.io import Slide
from vstain.napari import store_layers
from vstain.napari.layers import slide_layer_data
from vstain.tiles import OutputStore


@dataclass(frozen=True)
class RelativeView:
    """A camera relative to a layer: its centre as a fraction of the layer's extent (y, x), its
    zoom times the layer's longer side (screen px the whole side would take)."""

    centre: np.ndarray
    zoom: float


def _world_box(layer) -> tuple[np.ndarray, np.ndarray]:
    """World (y, x) low corner and size of the area ``layer``'s pixels cover."""
    extent = layer.extent
    low = extent.world[0][-2:] - extent.step[-2:] / 2
    return low, extent.world[1][-2:] - extent.world[0][-2:] + extent.step[-2:]


def relative_view(viewer, layer) -> RelativeView:
    """Where the camera is, relative to ``layer``."""
    camera = viewer.scene.camera
    low, size = _world_box(layer)
    centre = (np.asarray(camera.center[-2:], float) - low) / size
    return RelativeView(centre, float(camera.zoom * size.max()))


def restore_view(viewer, layer, view: RelativeView) -> None:
    """Put the camera at ``view`` relative to ``layer``."""
    low, size = _world_box(layer)
    camera = viewer.scene.camera
    camera.center = tuple(low + view.centre * size)
    camera.zoom = view.zoom / size.max()


#: What a slide layer without a pixel size has (napari's defaults), set when one replaces another.
UNPLACED = {"scale": (1.0, 1.0), "translate": (0.0, 0.0), "units": ("pixel", "pixel")}


def take(old, data_tuple: tuple) -> bool:
    """Give layer ``old`` the data, name, metadata and placement of a napari layer data tuple in
    place; False (and ``old`` untouched) when it cannot take them: another kind of layer or one
    pyramid and one single image. napari removes a layer slowly (a full garbage collection each,
    0.2-0.8 s here), and the layer pickers keep a layer that stays."""
    data, kwargs, kind = data_tuple
    if type(old).__name__.lower() != kind or old.multiscale != kwargs["multiscale"]:
        return False
    old.data = data
    for key, value in (UNPLACED | kwargs).items():
        if key in ("name", "metadata", *UNPLACED):
            setattr(old, key, value)
    return True


def put_slide(viewer, slide: Slide, name: str, old=None, index: int | None = None):
    """``slide`` as layer ``name`` in ``old``'s place (`take` when it can), or new at ``index``
    (the end when None).

    A new layer at ``old``'s place in the list comes in after ``old`` is renamed and before it
    is removed, so the layer pickers (they keep their choice by name) move to it; it is shown or
    hidden, and as opaque, as ``old`` was."""
    data, kwargs, kind = slide_layer_data(slide, name)
    if old is not None and old in viewer.layers:
        if take(old, (data, kwargs, kind)):
            return old
        index = viewer.layers.index(old)
        old.name = f"{old.name} (closing)"
        kwargs |= {"visible": old.visible, "opacity": old.opacity}
    layer = Layer.create(data, kwargs, kind)
    viewer.layers.insert(len(viewer.layers) if index is None else index, layer)
    remove(viewer, old)
    return layer


def put_store(viewer, store: Path, reference, downsample: float, prefix: str, old: list) -> None:
    """The outputs of ``store`` over ``reference`` (`store_layers.show_outputs`), each taken in
    place by the layer of ``old`` (the last slide's store layers) showing the same output when it
    can; the rest of ``old`` removed. ``old`` must show a store of the same model and options
    (their layers keep their names)."""
    placement = store_layers.aligned_placement(reference, downsample)
    left = {layer.metadata["vstain_output"]: layer for layer in old}
    for spec in OutputStore.open(store).specs.values():
        layer = left.get(spec.name)
        if layer is None or spec.name == "keypoints":  # keypoints: read tile by tile, not taken
            continue
        if take(layer, store_layers.output_layer_data(store, spec, layer.name, placement)):
            del left[spec.name]
    for layer in left.values():
        remove(viewer, layer)
    store_layers.show_outputs(viewer, store, reference, downsample, prefix)


def remove(viewer, layer) -> None:
    """Remove ``layer`` from the viewer if it is there, then let Qt draw the canvas: with napari
    0.9.2, vispy 0.17 and Mesa, two image layers removed without a draw in between make a later
    draw segfault in ``glDrawArrays`` (docs/napari.md)."""
    if layer is not None and layer in viewer.layers:
        viewer.layers.remove(layer)
        QApplication.processEvents()


def store_layers_of(viewer, slide_path: Path) -> list:
    """Layers over vstain output stores of the slide file ``slide_path`` (`store_path` names a
    store ``<slide file>.<model, tile, options>.zarr``)."""
    prefix = f"{Path(slide_path).name}."
    return [
        layer
        for layer in viewer.layers
        if Path(layer.metadata.get("vstain_store", "")).name.startswith(prefix)
    ]


def same_model(layer, slide_path: Path, store: Path, store_slide: Path) -> bool:
    """Whether store layer ``layer`` of slide file ``slide_path`` shows a store of the same
    model, tile and options as ``store`` of ``store_slide``."""
    shown = Path(layer.metadata["vstain_store"]).name
    return shown[len(Path(slide_path).name) :] == store.name[len(Path(store_slide).name) :]
