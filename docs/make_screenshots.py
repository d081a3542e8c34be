"""Screenshots of the napari plugin for docs/napari.md, taken from the real plugin under Xvfb.

docs/images/napari_he.png              the demo H&E slide opened with the vstain reader
docs/images/napari_overlay.png         the Virtual stain widget; a drawn rectangle stained, the
                                       virtual IHC over the H&E, unstained tiles transparent
docs/images/napari_side_by_side.png    H&E | real IHC (adjacent section) | virtual IHC, one camera
docs/images/napari_compare.png         the Compare widget: real IHC registered and shown through
                                       its affine, DAB difference map and positivity table
docs/images/napari_finetune.png        the Fine-tune widget after a short run: loss and
                                       validation plots, the re-stained preview
docs/images/napari_cells.png           StainDiffuser with "Segment": its virtual IHC and the
                                       positive cells it found, one label per cell
docs/images/napari_navigator.png       the slide navigator on a folder of two slides, side by
                                       side with each pane labelled

python docs/make_screenshots.py [FOLDER]   # re-runs itself under xvfb-run when there is no display
python docs/make_screenshots.py FOLDER navigator   # the navigator's picture only (a minute)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

WINDOW = (1500, 950)
SCREEN = "-screen 0 1920x1200x24"
#: The view: centre (y, x) as a fraction of the slide, and screen px per slide px.
CENTRE, ZOOM = (0.45, 0.4), 0.6
#: The stained rectangle, (y, x) corners as fractions of the view's half extent around its centre.
RECTANGLE = ((-0.5, -0.6), (0.5, 0.3))


def settle(app, seconds: float = 0.5) -> None:
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def main(folder: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from vstain.io import open_slide
    from vstain.napari.demo import wait_until_idle
    from vstain.napari.layers import slide_layer_data
    from vstain.napari.sample_data import HE_NAME, IHC_NAME
    from vstain.napari.stain_widget import VirtualStainWidget
    from vstain.synth.demo import demo_pair

    folder.mkdir(parents=True, exist_ok=True)
    he_path, ihc_path = demo_pair()
    viewer = napari.Viewer(title="vstain")
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()
    layers = {}
    for path, name in ((he_path, HE_NAME), (ihc_path, IHC_NAME)):
        data, kwargs, _ = slide_layer_data(open_slide(path), name)
        layers[name] = viewer.add_image(data, **kwargs)
    he = layers[HE_NAME]
    layers[IHC_NAME].visible = False
    widget = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    settle(app)

    height, width = np.asarray(he.level_shapes[0][:2]) * he.scale
    camera = viewer.scene.camera
    camera.center = (height * CENTRE[0], width * CENTRE[1])
    camera.zoom = ZOOM / he.scale[-1]
    settle(app)
    viewer.screenshot(str(folder / "napari_he.png"), canvas_only=True)

    half = np.asarray(viewer.canvas.size) / (2 * camera.zoom)
    centre = np.asarray(camera.center[-2:])
    (y0, x0), (y1, x1) = (centre + half * np.asarray(c) for c in RECTANGLE)
    shapes = viewer.add_shapes(
        [[[y0, x0], [y0, x1], [y1, x1], [y1, x0]]],
        shape_type="rectangle",
        name="selection",
        edge_color="yellow",
        edge_width=4 / camera.zoom,
        face_color="transparent",
        units="um",
    )
    viewer.layers.selection.active = he
    with tempfile.TemporaryDirectory() as stores:
        widget.folder_edit.setText(stores)
        widget.stain_selection()
        wait_until_idle(widget, timeout=600)
        viewer.layers.move(viewer.layers.index(shapes), len(viewer.layers))  # outline on top
        settle(app)
        viewer.screenshot(str(folder / "napari_overlay.png"), canvas_only=False)

        shapes.visible = False
        layers[IHC_NAME].visible = True
        widget.stain_view()
        wait_until_idle(widget, timeout=600)
        widget.side_button.click()
        viewer.reset_view()
        camera.zoom *= 3
        widget.stain_view()
        wait_until_idle(widget, timeout=600)
        settle(app)
        viewer.screenshot(str(folder / "napari_side_by_side.png"), canvas_only=False)
        widget.side_button.click()
        compare_and_finetune(viewer, app, folder, he, Path(stores))
        cells(viewer, app, folder, widget)
    viewer.close()


def wait_for(widget, app) -> None:
    while widget.busy:
        settle(app, 0.1)
    settle(app)


def compare_and_finetune(viewer, app, folder: Path, he, stores: Path) -> None:
    """Register the real IHC and compare a view; then fine-tune on two rectangles."""
    from vstain.napari.compare_widget import CompareWidget
    from vstain.napari.finetune_widget import FinetuneWidget
    from vstain.napari.sample_data import IHC_NAME

    compare = CompareWidget(viewer)
    dock = viewer.window.add_dock_widget(compare, name="Compare with real IHC")
    compare.real_box.setCurrentText(IHC_NAME)
    compare.register()
    wait_for(compare, app)
    viewer.reset_view()
    viewer.scene.camera.zoom *= 2.5
    settle(app)
    compare.compute_difference()
    wait_for(compare, app)
    viewer.screenshot(str(folder / "napari_compare.png"), canvas_only=False)
    viewer.window.remove_dock_widget(dock)

    tune = FinetuneWidget(viewer)
    dock = viewer.window.add_dock_widget(tune, name="Fine-tune")
    size = 512 * he.scale[-1]
    y, x = np.asarray(viewer.scene.camera.center[-2:]) - size
    squares = [[[y, x], [y + size, x + size]], [[y + size, x], [y + 2 * size, x + size]]]
    shapes = viewer.add_shapes(squares, shape_type="rectangle", name="regions", units="um")
    shapes.face_color = "transparent"
    tune.shapes_box.setCurrentText("regions")
    tune.ihc_box.setCurrentText(IHC_NAME)
    shapes.selected_data = {1}
    tune.toggle_validation()
    tune.out_edit.setText(str(stores / "tuned.safetensors"))
    tune.steps_box.setValue(40)
    tune.val_every_box.setValue(10)
    tune.train()
    wait_for(tune, app)
    viewer.screenshot(str(folder / "napari_finetune.png"), canvas_only=False)
    viewer.window.remove_dock_widget(dock)
    shapes.visible = False


def cells(viewer, app, folder: Path, widget) -> None:
    """Stain the view with StainDiffuser and its segmentation branch; earlier outputs hidden."""
    from vstain.napari.demo import wait_until_idle
    from vstain.napari.sample_data import HE_NAME

    for layer in viewer.layers:
        layer.visible = layer.name == HE_NAME
    viewer.scene.camera.zoom *= 2
    widget.model_box.setCurrentText("stain-diffuser")
    editors = widget.options_panel._editors
    editors["segment"].setChecked(True)
    editors["sampler"].setCurrentText("dpm-solver++")
    editors["steps"].setValue(20)
    widget.stain_view()
    wait_until_idle(widget, timeout=1200)
    settle(app)
    viewer.screenshot(str(folder / "napari_cells.png"), canvas_only=False)


def navigator(folder: Path) -> None:
    """The navigator on a folder of two slides (the demo pair as case-01, its H&E again as
    case-02, no IHC), the first slide's view stained, side by side."""
    import napari
    from qtpy.QtWidgets import QApplication

    from vstain.napari.demo import DEMO_MODEL, wait_until_idle
    from vstain.napari.stain_widget import VirtualStainWidget
    from vstain.synth.demo import demo_folder

    viewer = napari.Viewer(title="vstain")
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()
    widget = VirtualStainWidget(viewer)
    widget.model_box.setCurrentText(DEMO_MODEL)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    with tempfile.TemporaryDirectory() as tmp:
        slides = demo_folder(Path(tmp))
        widget.folder_edit.setText(tmp)
        widget.navigator.open_folder(slides)
        widget.side_button.click()
        viewer.scene.camera.zoom *= 3
        widget.stain_view()
        wait_until_idle(widget, timeout=600)
        settle(app)
        viewer.screenshot(str(folder / "napari_navigator.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    if not os.environ.get("DISPLAY"):
        os.execvp("xvfb-run", ["xvfb-run", "-a", "-s", SCREEN, sys.executable, *sys.argv])
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images"
    if sys.argv[2:] != ["navigator"]:
        main(out)
    navigator(out)
