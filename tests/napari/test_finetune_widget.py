"""The Fine-tune widget in a real viewer: rectangles in; a checkpoint and live plots out."""

import numpy as np
import pytest

from tests.io.builders import write_synth_pair
from tests.napari.conftest import tiny_checkpoint
from vstain.models import load_checkpoint, read_card, sha256_file
from vstain.napari.finetune_widget import PREVIEW, FinetuneWidget, shape_regions
from vstain.napari.stain_widget import VirtualStainWidget
from vstain.train.region_geojson import read_regions, write_regions
from vstain.train.regions import Region

pytestmark = pytest.mark.gui
SIZE = 512


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_synth_pair(tmp_path_factory.mktemp("ftpair"), SIZE, seed=9)


@pytest.fixture
def tune(make_napari_viewer, pair, tmp_path, qtbot, model_loads):
    viewer = make_napari_viewer()
    (he,) = viewer.open(str(pair[0]), plugin="napari-vstain")
    (ihc,) = viewer.open(str(pair[1]), plugin="napari-vstain")
    corners = ((0, 0), (256, 256), (256, 0), (512, 256))  # pixel edges of two 256 px squares
    world = [he.data_to_world(np.subtract(p, 0.5)) for p in corners]
    shapes = viewer.add_shapes(
        [[world[0], world[1]], [world[2], world[3]]],
        shape_type="rectangle",
        name="regions",
        units=he.units,
    )
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    base = tiny_checkpoint(tmp_path / "base.safetensors")
    assert widget.load_base(base)
    qtbot.waitUntil(lambda: not widget.busy and widget.part_box.count() > 0, timeout=60_000)
    widget.he_box.setCurrentText(he.name)
    widget.ihc_box.setCurrentText(ihc.name)
    widget.shapes_box.setCurrentText("regions")
    return viewer, widget, he, shapes, base


def test_validation_flags_and_regions_follow_the_rectangles(tune, tmp_path):
    _, widget, he, shapes, _ = tune
    assert widget.part_box.count() == 3 and "weights" in widget.part_box.itemText(2)
    shapes.selected_data = {1}
    widget.toggle_validation()
    assert shape_regions(shapes, he) == [Region(0, 0, 256, 256), Region(0, 256, 256, 256, True)]
    np.testing.assert_allclose(shapes.edge_color[:, :3], [(0, 1, 0), (1, 165 / 255, 0)], atol=1e-6)


def test_the_base_loads_off_the_ui_thread_and_the_stain_widget_loads_it_in_its_process(
    tune, qtbot, tmp_path, model_loads
):
    viewer, _, he, _, base = tune
    assert ("base.safetensors", False) in model_loads
    assert not [name for name, on_main_thread in model_loads if on_main_thread]
    stain = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(stain, name="Virtual stain")
    assert stain.load_checkpoint(base) and stain.device_box.currentData() == "auto"
    stain.layer_box.setCurrentText(he.name)
    stain.folder_edit.setText(str(tmp_path))
    loads = len(model_loads)
    stain.stain_view()
    qtbot.waitUntil(lambda: not stain.busy, timeout=60_000)
    assert "tiles stained" in stain.status_label.text(), stain.status_label.text()
    assert len(model_loads) == loads  # loaded by the staining process, not in napari's


def test_training_saves_a_checkpoint_the_stain_widget_offers(tune, qtbot, tmp_path):
    viewer, widget, he, shapes, base = tune
    stain = VirtualStainWidget(viewer)
    shapes.selected_data = {1}
    widget.toggle_validation()
    out = tmp_path / "tuned.safetensors"
    widget.out_edit.setText(str(out))
    widget.steps_box.setValue(6)
    widget.val_every_box.setValue(3)
    widget.crop_box.setValue(64)
    widget.batch_box.setValue(2)
    base_hash = sha256_file(base)
    widget.train()
    qtbot.waitUntil(lambda: not widget.busy, timeout=180_000)
    assert "Saved tuned.safetensors" in widget.status_label.text(), widget.status_label.text()
    assert widget.loss_plot.points() >= 6 and widget.val_plot.points() >= 2
    assert PREVIEW in viewer.layers and viewer.layers[PREVIEW].data.shape[-1] == 3
    card = read_card(out)
    assert card.parent == str(base) and card.parent_sha256 == base_hash == sha256_file(base)
    assert load_checkpoint(out).card.steps in (3, 6)
    assert stain.model_box.findText("tuned") >= 0  # offered in the Stain widget at once

    write_regions(tmp_path / "r.geojson", widget.regions())  # what Export regions writes
    assert read_regions(tmp_path / "r.geojson") == shape_regions(shapes, he)
    assert np.isfinite([s[-1][1] for s in widget.loss_plot.series.values()]).all()
