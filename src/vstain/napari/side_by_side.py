"""Side by side (napari's grid mode, one camera) that says what is what: each pane labelled with
its layer's name (napari's per-layer name overlay, drawn in the layer's own pane), and no empty
pane beside up to three layers."""

from __future__ import annotations


def fit_grid(viewer) -> None:
    """One row for up to three shown layers (H&E, virtual, real: napari's own 2 x 2 would leave
    an empty black pane); napari's shape beyond. Hidden layers take no pane."""
    shown = sum(layer.visible for layer in viewer.layers)
    viewer.canvas.grid.shape = (1, shown) if 1 <= shown <= 3 else (-1, -1)


def label_panes(viewer) -> None:
    """Name labels on every layer's pane while the grid is on, none when it is off."""
    on = viewer.canvas.grid.enabled
    for layer in viewer.layers:
        layer.name_overlay.visible = on


def follow(viewer) -> None:
    """Keep the grid fitted and its panes labelled as layers come, go, show and hide."""

    def update(event=None) -> None:
        if event is None or event.type in ("inserted", "removed", "visible", "enabled"):
            fit_grid(viewer)
            label_panes(viewer)

    viewer.layers.events.connect(update)
    viewer.canvas.grid.events.enabled.connect(update)
    update()
