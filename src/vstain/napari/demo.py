"""`vstain demo`: napari on the demo slide pair with the Virtual stain widget staining the view."""

from __future__ import annotations

import time
from pathlib import Path

from vstain.errors import VstainError
from vstain.io import open_slide
from vstain.napari.layers import slide_layer_data
from vstain.napari.sample_data import HE_NAME, IHC_NAME
from vstain.synth.demo import demo_pair

WINDOW_SIZE = (1500, 950)
#: The shipped model the demo stains with (the fastest; otherwise the first shipped one).
DEMO_MODEL = "pix2pix"
#: The demo opens this much closer than "fit the whole slide".
ZOOM = 4.0
#: Longest wait for the demo's staining before the screenshot is taken anyway.
SCREENSHOT_TIMEOUT_S = 300.0


def open_demo(viewer, he_path: Path, ihc_path: Path):
    """Add the slide pair to ``viewer``, dock the Virtual stain widget and stain the view with
    `DEMO_MODEL` (with no shipped model, a notification asks to load a checkpoint). Returns the
    widget.
    """
    from napari.utils.notifications import show_warning

    from vstain.napari.stain_widget import VirtualStainWidget

    for path, name in ((he_path, HE_NAME), (ihc_path, IHC_NAME)):
        data, kwargs, _ = slide_layer_data(open_slide(path), name)
        viewer.add_image(data, **kwargs)
    widget = VirtualStainWidget(viewer)
    if widget.model_box.findText(DEMO_MODEL) >= 0:
        widget.model_box.setCurrentText(DEMO_MODEL)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    viewer.scene.camera.zoom *= ZOOM
    if widget.has_model:
        widget.stain_view()
    else:
        show_warning(
            "No shipped model: load a checkpoint (.safetensors) in the Virtual stain panel."
        )
    return widget


def wait_until_idle(widget, timeout: float) -> None:
    """Run the Qt event loop until ``widget`` has no staining job left (or ``timeout`` s)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while widget.busy:
        if time.monotonic() > end:
            raise VstainError(f"The demo did not finish staining within {timeout:.0f} s.")
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()


def run_demo(screenshot: Path | None = None) -> None:
    """Open the demo; with ``screenshot``, save the window once the view is stained, and exit."""
    import napari

    he_path, ihc_path = demo_pair()
    viewer = napari.Viewer(title="vstain demo")
    viewer.window.resize(*WINDOW_SIZE)
    widget = open_demo(viewer, he_path, ihc_path)
    if screenshot is None:
        napari.run()
        return
    try:
        wait_until_idle(widget, SCREENSHOT_TIMEOUT_S)
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshot), canvas_only=False)
    finally:
        viewer.close()
