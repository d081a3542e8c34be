"""Layer pickers and the slides behind layers, shared by the plugin's widgets."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image, Shapes
from qtpy.QtWidgets import QComboBox

from vstain.errors import SlideError
from vstain.io import Slide, open_slide


def slide_path_of(layer) -> Path:
    """The file an image layer was opened from (vstain reader metadata, else napari's source)."""
    path = layer.metadata.get("path") or layer.source.path
    if not path:
        raise SlideError(
            f"Layer {layer.name!r} was not opened from a file, so it cannot be stained tile by "
            "tile. Save it as OME-TIFF (File > Save Selected Layers) and open that file."
        )
    return Path(path)


def slide_layers(viewer, stores: bool = False) -> list:
    """RGB image layers of slides (``stores``: of vstain output stores instead)."""
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and layer.rgb and ("vstain_store" in layer.metadata) == stores
    ]


def shapes_layers(viewer) -> list:
    return [layer for layer in viewer.layers if isinstance(layer, Shapes)]


def fill_box(box: QComboBox, layers: list, extras: tuple[str, ...] = ()) -> None:
    """Offer ``extras`` (no layer) then ``layers`` in ``box``, keeping the choice by name."""
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    for item in extras:
        box.addItem(item, None)
    for layer in layers:
        box.addItem(layer.name, layer)
    found = box.findText(current)
    box.setCurrentIndex(found if found >= 0 else 0)
    box.blockSignals(False)


class SlideCache:
    """The `Slide` behind a layer, opened once per file (a store layer: its virtual IHC)."""

    def __init__(self):
        self._slides: dict[Path, Slide] = {}

    def of(self, layer) -> Slide:
        store = layer.metadata.get("vstain_store")
        path = Path(store) / "ihc" if store else slide_path_of(layer)
        if path not in self._slides:
            self._slides[path] = open_slide(path)
        return self._slides[path]
