"""`vstain demo`: napari on the demo slide pair, stained with a shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def visible_region(viewer, layer) -> tuple[int, int, int, int]:
    """The part of ``layer``'s level 0 visible in the canvas, as (x, y, w, h) in pixels."""
    h, w = viewer.window._qt_viewer.canvas.size
    cy, cx = viewer.camera.center[-2:]
    zoom = viewer.camera.zoom
    y0, x0 = layer.world_to_data((cy - h / (2 * zoom), cx - w / (2 * zoom)))
    y1, x1 = layer.world_to_data((cy + h / (2 * zoom), cx + w / (2 * zoom)))
    height, width = layer.level_shapes[0][:2] if layer.multiscale else layer.data.shape[:2]
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    x1, y1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def run_demo(screenshot: Path | None = None) -> None:
    """Open the demo pair; stain the view with the first shipped model; optionally screenshot."""
    import napari
    from napari.utils.notifications import show_warning

    from vstain.demo_data import cache_dir, demo_pair
    from vstain.io import open_slide
    from vstain.napari.layers import slide_layer_data
    from vstain.weights import shipped_checkpoints

    he_path, ihc_path = demo_pair()
    viewer = napari.Viewer(title="vstain demo")
    viewer.window.resize(1500, 950)
    he = open_slide(he_path)
    layers = {}
    for slide, name in ((he, "H&E"), (open_slide(ihc_path), "real IHC (adjacent section)")):
        data, kwargs, _ = slide_layer_data(slide, name)
        layers[name] = viewer.add_image(data, **kwargs)
    viewer.camera.zoom *= 4
    checkpoints = shipped_checkpoints()
    if checkpoints:
        from vstain.stain import stain_slide

        name, path = next(iter(checkpoints.items()))
        out = cache_dir() / "demo" / f"{he_path.stem}.{name}.zarr"
        x, y, w, h = visible_region(viewer, layers["H&E"])
        stain_slide(
            he, path, out, region=(x, y, w, h), toward=(x + w / 2, y + h / 2), resume=out.exists()
        )
        data, kwargs, _ = slide_layer_data(open_slide(out / "ihc"), f"{name} virtual IHC")
        viewer.add_image(data, **kwargs)
    else:
        show_warning("No shipped model: showing the slide pair only.")
    viewer.grid.enabled = True
    if screenshot is not None:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()
        return
    napari.run()
