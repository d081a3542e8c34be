"""The slide navigator of the Virtual stain widget in a real napari viewer (runs under Xvfb)."""

import shutil

import numpy as np
import pytest
import zarr
from napari.utils.key_bindings import KeyBinding

from tests.napari.conftest import PIXEL_SIZE
from tests.tiles.conftest import make_tissue_image
from vstain.io import write_ome_tiff
from vstain.napari.navigator import HE_NAME, NEXT_KEY, PREVIOUS_KEY
from vstain.napari.stain_widget import VirtualStainWidget
from vstain.tiles.store import PENDING

pytestmark = pytest.mark.gui
#: (file name, height, width) of the H&E slides, in the navigator's (name) order.
SLIDES = [("a.ome.tif", 384, 512), ("b.ome.tif", 256, 256), ("c.ome.tif", 512, 384)]


def write_slide(path, height, width):
    write_ome_tiff(
        make_tissue_image(height, width), path, pixel_size=PIXEL_SIZE, compression="deflate"
    )


@pytest.fixture
def folder(tmp_path):
    """Three small H&E slides; a and c have a real IHC partner by the default rule."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for name, height, width in SLIDES:
        write_slide(folder / name, height, width)
    for stem in ("a", "c"):
        shutil.copy(folder / f"{stem}.ome.tif", folder / f"{stem}_IHC.ome.tif")
    return folder


@pytest.fixture
def nav(make_napari_viewer, checkpoint, tmp_path):
    """(viewer, Virtual stain widget, its navigator) with the tiny checkpoint, stores in tmp."""
    viewer = make_napari_viewer()
    widget = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    assert widget.load_checkpoint(checkpoint)
    (tmp_path / "stores").mkdir()
    widget.folder_edit.setText(str(tmp_path / "stores"))
    return viewer, widget, widget.navigator


def wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def shown(viewer) -> dict[str, str]:
    """Layer name -> file name of the slide or store it shows."""
    return {
        layer.name: (layer.metadata.get("vstain_store") or layer.metadata["path"]).split("/")[-1]
        for layer in viewer.layers
    }


def store_layer(viewer):
    (layer,) = [layer for layer in viewer.layers if "vstain_store" in layer.metadata]
    return layer


def press(viewer, key: str) -> None:
    viewer.keymap[KeyBinding.from_str(key)](viewer)


def test_next_and_previous_go_through_the_folder_in_order_and_stop_at_the_ends(nav, folder):
    viewer, widget, navigator = nav
    navigator.open_folder(folder)
    assert shown(viewer) == {HE_NAME: "a.ome.tif", "real ck818": "a_IHC.ome.tif"}
    assert widget.slide_layer is navigator.he_layer
    assert navigator.position_label.text() == "1 / 3: a.ome.tif (a_IHC.ome.tif)"
    assert not navigator.previous_button.isEnabled()

    navigator.next()
    assert shown(viewer) == {HE_NAME: "b.ome.tif"}  # replaced, not added; b has no partner
    press(viewer, NEXT_KEY)
    assert shown(viewer) == {HE_NAME: "c.ome.tif", "real ck818": "c_IHC.ome.tif"}
    assert not navigator.next_button.isEnabled()
    press(viewer, NEXT_KEY)  # the last slide: stays
    assert navigator.index == 2 and shown(viewer)[HE_NAME] == "c.ome.tif"
    assert widget.slide_layer is navigator.he_layer

    press(viewer, PREVIOUS_KEY)
    navigator.previous()
    navigator.previous()  # the first slide: stays
    assert navigator.index == 0 and shown(viewer)[HE_NAME] == "a.ome.tif"
    order = [layer.name for layer in viewer.layers]
    assert order == [HE_NAME, "real ck818"], "the real IHC above the H&E, as before"


def test_the_ihc_rule_is_set_by_the_user(nav, folder):
    viewer, _, navigator = nav
    (folder / "b-ck818.ome.tif").write_bytes((folder / "b.ome.tif").read_bytes())
    navigator.open_folder(folder)
    assert len(navigator.pairs) == 4  # b-ck818 is a slide of its own under the default rule
    navigator.rule_edit.setText("{name}-ck818.*")
    navigator.rule_edit.editingFinished.emit()
    assert [(p.he.name, p.ihc and p.ihc.name) for p in navigator.pairs] == [
        ("a.ome.tif", None),
        ("a_IHC.ome.tif", None),
        ("b.ome.tif", "b-ck818.ome.tif"),
        ("c.ome.tif", None),
        ("c_IHC.ome.tif", None),
    ]
    assert shown(viewer) == {HE_NAME: "a.ome.tif"}, "the same slide, paired again"
    navigator.go(2, 1)
    assert shown(viewer) == {HE_NAME: "b.ome.tif", "real ck818": "b-ck818.ome.tif"}


def test_bad_slides_are_skipped_with_a_notification_and_an_empty_folder_says_so(
    nav, folder, notes, tmp_path
):
    viewer, _, navigator = nav
    (folder / "b.ome.tif").write_bytes(b"not a tiff")
    navigator.open_folder(folder)
    navigator.next()
    assert shown(viewer)[HE_NAME] == "c.ome.tif" and navigator.index == 2
    assert notes[-1][0] == "error" and "b.ome.tif" in notes[-1][1]

    empty = tmp_path / "empty"
    empty.mkdir()
    navigator.open_folder(empty)
    assert notes[-1] == (
        "warning",
        f"{empty} holds no slides vstain reads (SVS, TIFF, OME-Zarr, PNG, JPEG, ...).",
    )
    assert navigator.index == 2 and shown(viewer)[HE_NAME] == "c.ome.tif", "kept its place"


def at(fraction: tuple[float, float], height: int, width: int) -> tuple[float, float]:
    """World (y, x) at a fraction of the area a slide's pixels cover (centres at whole pixels)."""
    (fy, fx) = fraction
    return (-0.5 + fy * height) * PIXEL_SIZE, (-0.5 + fx * width) * PIXEL_SIZE


def test_the_camera_keeps_its_relative_place_and_zoom(nav, folder):
    viewer, _, navigator = nav
    navigator.open_folder(folder)  # a: 384 x 512 px
    camera = viewer.scene.camera
    camera.center = at((0.25, 0.75), 384, 512)
    camera.zoom = 3.0
    navigator.next()  # b: 256 x 256 px
    np.testing.assert_allclose(camera.center[-2:], at((0.25, 0.75), 256, 256), rtol=1e-6)
    np.testing.assert_allclose(camera.zoom, 3.0 * 512 / 256, rtol=1e-6)
    navigator.next()  # c: 512 x 384 px
    np.testing.assert_allclose(camera.center[-2:], at((0.25, 0.75), 512, 384), rtol=1e-6)
    np.testing.assert_allclose(camera.zoom, 3.0, rtol=1e-6)


def stored_tiles_show(layer, he) -> None:
    """``layer`` lies over ``he`` and shows every tile of its (finished) store."""
    np.testing.assert_allclose(layer.scale, he.scale)
    np.testing.assert_allclose(layer.translate, he.translate)
    level0 = layer.data[0] if layer.multiscale else layer.data
    assert np.asarray(level0[..., 3]).min() == 255
    assert tuple(level0.shape[:2]) == tuple(he.level_shapes[0][:2])


def test_the_stored_virtual_ihc_comes_back_with_no_tile_recomputed(nav, folder, qtbot):
    viewer, widget, navigator = nav
    navigator.open_folder(folder)
    stores = {}
    for index in (0, 2):  # a and c (b stays without a store)
        navigator.go(index, 1)
        widget.stain_view()
        wait_idle(qtbot, widget)
        stores[index] = store_layer(viewer).metadata["vstain_store"]
        assert (np.asarray(zarr.open_group(stores[index], mode="r")["done"][:]) != PENDING).all()
    files = {p: p.stat().st_mtime_ns for p in (folder.parent / "stores").rglob("*") if p.is_file()}

    navigator.go(1, 1)
    assert shown(viewer) == {HE_NAME: "b.ome.tif"}, "slide c's virtual IHC is gone"
    navigator.previous()
    layer = store_layer(viewer)
    assert layer.metadata["vstain_store"] == stores[0] and layer.name == "tiny ck818 virtual IHC"
    stored_tiles_show(layer, navigator.he_layer)
    navigator.go(2, 1)  # from a store to a store: the layer takes the other store in place
    assert store_layer(viewer) is layer and layer.metadata["vstain_store"] == stores[2]
    stored_tiles_show(layer, navigator.he_layer)
    assert not widget.busy, "nothing is stained: Auto is off"
    now = {p: p.stat().st_mtime_ns for p in (folder.parent / "stores").rglob("*") if p.is_file()}
    assert now == files, "no file of the stores was written"


def test_with_auto_on_the_new_slide_s_view_is_stained(nav, folder, qtbot):
    viewer, widget, navigator = nav
    navigator.open_folder(folder)
    widget.auto_box.setChecked(True)
    wait_idle(qtbot, widget)
    navigator.next()
    qtbot.waitUntil(lambda: widget.busy, timeout=5_000)
    wait_idle(qtbot, widget)
    assert shown(viewer)["tiny ck818 virtual IHC"].startswith("b.ome.tif.tiny-")


def test_a_running_job_is_cancelled_before_the_slide_changes(nav, folder, slide_path, qtbot):
    viewer, widget, navigator = nav
    shutil.copy(slide_path, folder / "0-big.ome.tif")  # 1024 px: 64 tiles, the first slide
    navigator.open_folder(folder)
    widget.batch_box.setValue(1)
    widget.stain_whole_slide()
    job = widget.runner.job
    qtbot.waitUntil(lambda: job.progress is not None and job.progress.done >= 2, timeout=30_000)
    store = job.store
    navigator.next()
    assert navigator.position_label.text() == "Stopping the running job..."
    navigator.next()  # pressed again while the job stops: one slide further
    qtbot.waitUntil(lambda: navigator.index == 2, timeout=5_000)
    assert job.finished and job.cancelled and job.error is None
    assert not widget.busy
    assert shown(viewer) == {HE_NAME: "b.ome.tif"}, "no layer of the old slide is left"
    done = np.asarray(zarr.open_group(store, mode="r")["done"][:])
    assert 0 < (done != PENDING).sum() < done.size, "stopped part way, the store kept"


def pane_labels(viewer) -> dict[str, tuple]:
    """Layer name -> (text drawn, grid pane) of every name label napari draws in grid mode."""
    canvas = viewer.window._qt_viewer.canvas  # test-only look at what vispy draws
    labels = {}
    for layer in viewer.layers:
        visual = canvas._layer_overlay_to_visual.get(layer, {}).get(layer.name_overlay)
        if visual is not None and visual.node.parent is not None and visual.node.visible:
            labels[layer.name] = (visual.node.text, visual.node.parent)
    return labels


def test_side_by_side_labels_each_pane_with_what_it_shows(nav, folder, qtbot):
    viewer, widget, navigator = nav
    navigator.open_folder(folder)
    widget.stain_view()
    wait_idle(qtbot, widget)
    assert pane_labels(viewer) == {}
    widget.side_button.click()
    assert viewer.canvas.grid.shape == (1, 3)
    labels = pane_labels(viewer)
    names = [HE_NAME, "real ck818", "tiny ck818 virtual IHC"]
    assert {name: text for name, (text, _) in labels.items()} == {name: name for name in names}
    assert len({pane for _, pane in labels.values()}) == 3, "one label in each pane"

    viewer.layers["real ck818"].visible = False  # a hidden layer takes no pane
    assert viewer.canvas.grid.shape == (1, 2)
    assert set(pane_labels(viewer)) == {HE_NAME, "tiny ck818 virtual IHC"}
    navigator.go(2, 1)  # a new slide in side by side: labelled too; its real IHC stays hidden
    assert set(pane_labels(viewer)) == {HE_NAME}
    assert not viewer.layers["real ck818"].visible
    widget.side_button.click()
    assert pane_labels(viewer) == {}


def test_a_click_while_a_switch_draws_waits_for_it(nav, folder, qtbot):
    viewer, _, navigator = nav
    navigator.open_folder(folder)
    clicks = []

    def click_once(event):  # Qt draws after a removal: a queued key press would run here
        if not clicks:
            clicks.append(navigator.index)
            navigator.next()

    viewer.layers.events.removed.connect(click_once)
    navigator.next()
    assert clicks == [0] and navigator.index == 1
    qtbot.waitUntil(lambda: navigator.index == 2, timeout=5_000)
    assert shown(viewer) == {HE_NAME: "c.ome.tif", "real ck818": "c_IHC.ome.tif"}
