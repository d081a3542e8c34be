"""Next / Previous of the slide navigator in a real napari viewer: how long from the click to the
new slide's H&E and its stored virtual IHC on screen.

Two slides (the demo H&E as case-01 with its IHC, and again as case-02 without), each with the
view already stained by the demo model (so both have a store); a 1600 x 1000 canvas at one screen
pixel per slide pixel. Each click is timed to the end of the navigator's switch (layers replaced,
store reopened, camera placed: all on the main thread; Qt may draw in between, see
`vstain.napari.slide_swap.remove`) and to the first frame swapped after it, which draws the new
H&E and virtual IHC (napari slices them synchronously when they are added). Last, one
``gc.collect()`` in the same process: napari runs one for every layer it removes.

python bench/bench_navigator.py   # re-runs itself under xvfb-run when there is no display
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_napari import CANVAS, SCREEN, fit_canvas, process_for

CLICKS = 10


def timed_click(viewer, app, click) -> tuple[float, float]:
    """(switch s, first frame s) of one Next / Previous."""
    frames: list[float] = []
    gl_widget = viewer.window._qt_viewer.canvas.native  # a QOpenGLWidget

    def frame_shown():
        frames.append(time.perf_counter())

    process_for(app, 0.5)
    gl_widget.frameSwapped.connect(frame_shown)
    try:
        start = time.perf_counter()
        click()
        switched = time.perf_counter()
        while not frames or frames[-1] < switched:
            app.processEvents()
            time.sleep(0.001)
    finally:
        gl_widget.frameSwapped.disconnect(frame_shown)
    return switched - start, frames[-1] - start


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from vstain.napari.demo import DEMO_MODEL, wait_until_idle
    from vstain.napari.stain_widget import VirtualStainWidget
    from vstain.synth.demo import demo_folder

    viewer = napari.Viewer(title="bench navigator")
    app = QApplication.instance()
    widget = VirtualStainWidget(viewer)
    widget.model_box.setCurrentText(DEMO_MODEL)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    fit_canvas(viewer, app)
    navigator = widget.navigator
    with tempfile.TemporaryDirectory() as tmp:
        slides = demo_folder(Path(tmp))
        widget.folder_edit.setText(tmp)
        navigator.open_folder(slides)
        camera = viewer.scene.camera
        camera.zoom = 1 / navigator.he_layer.scale[-1]  # one screen px per slide px
        for step in (None, navigator.next):  # a store for each slide
            if step is not None:
                step()
            widget.stain_view()
            wait_until_idle(widget, timeout=600)
        runs = [
            timed_click(viewer, app, navigator.previous if k % 2 == 0 else navigator.next)
            for k in range(CLICKS)
        ]
        stores = [layer.name for layer in viewer.layers if "vstain_store" in layer.metadata]
        start = time.perf_counter()
        gc.collect()  # what napari runs for every layer it removes
        collect = time.perf_counter() - start
    viewer.close()
    switch, frame = (np.array(column) for column in zip(*runs, strict=True))
    print(
        json.dumps(
            {
                "canvas": CANVAS,
                "clicks": CLICKS,
                "layers_after_last_click": stores,
                "switch_s": {"median": round(float(np.median(switch)), 3), "max": switch.max()},
                "first_frame_s": {"median": round(float(np.median(frame)), 3), "max": frame.max()},
                "gc_collect_s": round(collect, 3),
                "load": os.getloadavg(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    if not os.environ.get("DISPLAY"):
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", SCREEN, sys.executable, *sys.argv])
    main()
