"""Responsiveness of the Virtual stain widget in a real napari viewer.

While "Stain view" fills a 1600 x 1000 canvas at the model's resolution (the demo slide and the
first shipped model, loaded and warmed up in the staining process when the widget chose it), a
10 ms QTimer heartbeat on the main thread records every gap between its ticks: a gap of g ms
means the main thread was busy for about g - 10 ms. Printed per run: p50 / p99 / max gap, time
from the click to the first virtual tile drawn on the canvas (a frame swapped after the first
layer refresh that shows a tile) and time to fill the canvas; per variant a first view (new
store: the layer is added) and a next view elsewhere (the layer exists, as when Auto re-stains).
Variants: the plugin as it is (napari's defaults); ``settings.experimental.async_`` on; no layer
updates at all (only the staining process competes with the main thread). The breakdown of one
refresh of the output layers (the plugin's slicing, napari's texture upload and draw) beside the
same for a plain numpy layer filling the canvas (no plugin code), and how long Cancel takes to
stop a whole-slide run.

python bench/bench_napari.py          # re-runs itself under xvfb-run when there is no display
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CANVAS = (1000, 1600)  # (height, width) px
HEARTBEAT_MS = 10
SCREEN = "-screen 0 2560x1600x24"
VARIANTS = ("default", "async_slicing", "no_layer_updates")
#: Repetitions of each step of the refresh breakdown (the median is printed).
REPEATS = 15


def process_for(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def fit_canvas(viewer, app) -> None:
    """Resize the window until the canvas is CANVAS px."""
    window = viewer.window._qt_window
    for _ in range(5):
        process_for(app, 0.3)
        dh, dw = np.subtract(CANVAS, viewer.canvas.size)
        if dh == dw == 0:
            return
        window.resize(window.width() + int(dw), window.height() + int(dh))
    raise RuntimeError(f"canvas is {viewer.canvas.size}, wanted {CANVAS}; enlarge the screen")


class Heartbeat:
    """Timestamps of a precise 10 ms QTimer on the main thread."""

    def __init__(self):
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def gaps_ms(self, start: float, end: float) -> np.ndarray:
        t = np.array([x for x in self.ticks if start <= x <= end])
        return np.diff(t) * 1000


def gap_stats(gaps: np.ndarray) -> dict:
    return {
        "ticks": len(gaps),
        "p50_ms": round(float(np.percentile(gaps, 50)), 1),
        "p99_ms": round(float(np.percentile(gaps, 99)), 1),
        "max_ms": round(float(gaps.max()), 1),
    }


def stain_view_run(viewer, widget, app, heartbeat, out_dir: Path) -> dict:
    """Click "Stain view" into an empty store; time the first tile on the canvas and the fill."""
    from vstain.napari import store_layers

    frames: list[float] = []
    refreshes: list[float] = []
    gl_widget = viewer.window._qt_viewer.canvas.native  # a QOpenGLWidget

    def frame_shown():
        frames.append(time.perf_counter())

    gl_widget.frameSwapped.connect(frame_shown)
    original = store_layers.refresh

    def timed_refresh(layers, **kwargs):
        original(layers, **kwargs)
        job = widget.runner.job
        if job is not None and job.updates:  # a refresh that shows tiles (not the layer's first)
            refreshes.append(time.perf_counter())

    store_layers.refresh = timed_refresh
    widget.folder_edit.setText(str(out_dir))
    try:
        click = time.perf_counter()
        widget.stain_view()
        while widget.busy:
            app.processEvents()
            time.sleep(0.001)
        filled = time.perf_counter()
        process_for(app, 0.3)  # the last refresh reaches the screen
    finally:
        store_layers.refresh = original
        gl_widget.frameSwapped.disconnect(frame_shown)
    first = next((t - click for t in frames if refreshes and t > refreshes[0]), None)
    return {
        "status": widget.status_label.text(),
        "first_tile_on_screen_s": None if first is None else round(first, 2),
        "canvas_filled_s": round(filled - click, 2),
        "refreshes": len(refreshes),
        **gap_stats(heartbeat.gaps_ms(click, filled)),
    }


@contextlib.contextmanager
def variant(name: str, widget):
    """napari set-up of one measured run, restored afterwards."""
    from napari.settings import get_settings

    experimental = get_settings().experimental
    user_async = experimental.async_
    try:
        if name == "async_slicing":
            experimental.async_ = True
        elif name == "no_layer_updates":  # only the staining process competes with the main one
            widget._refresh_layers = lambda job, final=False: None
        yield
    finally:
        experimental.async_ = user_async
        widget.__dict__.pop("_refresh_layers", None)


def median_ms(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 1)


def plugin_refresh(viewer, layers: list) -> dict:
    """Median ms of one refresh of the plugin's output layers (slicing from decoded chunks), of a
    repaint after it (napari, vispy and Mesa: texture upload and draw) and of a repaint with
    nothing new (draw only)."""
    from vstain.napari import store_layers

    gl = viewer.window._qt_viewer.canvas.native
    refresh = lambda: store_layers.refresh(layers, pasted=True)  # noqa: E731
    return {
        "plugin_refresh_slicing_ms": median_ms(refresh),
        "plugin_refresh_and_repaint_ms": median_ms(lambda: (refresh(), gl.repaint())),
        "repaint_nothing_new_ms": median_ms(gl.repaint),
    }


def numpy_canvas(viewer, app) -> dict:
    """The same for a numpy RGBA layer filling the canvas, the only visible layer: no plugin
    code runs. The layer is hidden afterwards, not removed (napari 0.9.2 + Mesa crash when
    layers are removed and added)."""
    gl = viewer.window._qt_viewer.canvas.native
    hidden = [layer for layer in viewer.layers if layer.visible]
    for layer in hidden:
        layer.visible = False
    canvas = np.random.default_rng(0).integers(0, 256, (*CANVAS, 4), dtype=np.uint8)
    plain = viewer.add_image(canvas, rgb=True, name="plain numpy canvas")
    camera = viewer.scene.camera.center, viewer.scene.camera.zoom
    viewer.reset_view()
    process_for(app, 0.5)
    out = {
        "numpy_canvas_refresh_ms": median_ms(lambda: plain.refresh(thumbnail=False)),
        "numpy_canvas_refresh_and_repaint_ms": median_ms(
            lambda: (plain.refresh(thumbnail=False), gl.repaint())
        ),
        "numpy_canvas_repaint_nothing_new_ms": median_ms(gl.repaint),
    }
    plain.visible = False
    for layer in hidden:
        layer.visible = True
    viewer.scene.camera.center, viewer.scene.camera.zoom = camera
    process_for(app, 0.3)
    return out


def cancel_latency(widget, app, out_dir: Path) -> float:
    """Seconds from Cancel to the end of a whole-slide run that has done a few tiles."""
    widget.folder_edit.setText(str(out_dir))
    widget.stain_whole_slide()
    job = widget.runner.job
    while job.progress is None or job.progress.done < 3:
        app.processEvents()
        time.sleep(0.005)
    start = time.perf_counter()
    widget.cancel()
    job.wait()
    latency = time.perf_counter() - start
    while widget.busy:
        app.processEvents()
    return round(latency, 2)


def bench_viewer(slide_path: Path, title: str):
    """(viewer, app, H&E layer, docked Virtual stain widget) with the canvas at CANVAS px."""
    import napari
    from qtpy.QtWidgets import QApplication

    from vstain.io import open_slide
    from vstain.napari.layers import slide_layer_data
    from vstain.napari.stain_widget import VirtualStainWidget

    viewer = napari.Viewer(title=title)
    app = QApplication.instance()
    data, kwargs, _ = slide_layer_data(open_slide(slide_path), "H&E")
    he = viewer.add_image(data, **kwargs)
    widget = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    fit_canvas(viewer, app)
    return viewer, app, he, widget


def wait_for_worker(app) -> float:
    """Seconds until the staining process the widget started has loaded and warmed its model."""
    from vstain.napari.model_cache import WORKER

    start = time.perf_counter()
    while not WORKER.worker.ready:
        app.processEvents()
        WORKER.worker.wait_ready(0.05)
        if WORKER.worker.load_error is not None:
            raise WORKER.worker.load_error
    return round(time.perf_counter() - start, 2)


def main() -> None:
    from vstain.synth.demo import demo_pair

    he_path, _ = demo_pair()
    load = os.getloadavg()
    viewer, app, he, widget = bench_viewer(he_path, "bench")
    heartbeat = Heartbeat()
    heartbeat.timer.start()
    out = {"canvas": list(viewer.canvas.size), "model": widget.model_name}
    out["worker_ready_s"] = wait_for_worker(app)  # started when the widget chose the model
    process_for(app, 1.0)  # the slide's tissue mask, asked for when its layer was chosen
    idle = time.perf_counter()
    process_for(app, 2.0)
    out["idle"] = gap_stats(heartbeat.gaps_ms(idle, time.perf_counter()))
    out["refresh_breakdown"] = numpy_canvas(viewer, app)
    viewer.scene.camera.zoom = 1 / he.scale[-1]  # one screen px per slide px (0.5 µm)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        height, width = he.level_shapes[0][:2] * he.scale
        for name in VARIANTS:
            with variant(name, widget):
                out[name] = {}
                for step, (y, x) in (("first_view", (0.3, 0.3)), ("next_view", (0.7, 0.7))):
                    viewer.scene.camera.center = (0, height * y, width * x)
                    process_for(app, 0.5)
                    out[name][step] = stain_view_run(viewer, widget, app, heartbeat, tmp / name)
                    print(name, step, out[name][step], file=sys.stderr, flush=True)
            layers = [layer for layer in viewer.layers if "vstain_store" in layer.metadata]
            if name == "default":
                out["refresh_breakdown"] |= plugin_refresh(viewer, layers)
            for layer in layers:
                viewer.layers.remove(layer)
                process_for(app, 0.3)  # napari 0.9.2 + Mesa segfault: two removals, no redraw
        out["cancel_latency_s"] = cancel_latency(widget, app, tmp / "cancel")
    viewer.close()
    out["load_average_1_5_15"] = {"start": [round(v, 2) for v in load]}
    out["load_average_1_5_15"]["end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if not os.environ.get("DISPLAY"):
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", SCREEN, sys.executable, *sys.argv])
    main()
