"""The writer (layer -> OME-Zarr / OME-TIFF), the sample data, and `vstain demo`'s set-up."""

import numpy as np
import pytest
import skimage.data

from tests.napari.conftest import tiny_checkpoint
from tests.tiles.conftest import make_tissue_image
from vstain.errors import SlideError
from vstain.io import open_slide
from vstain.napari import demo, sample_data
from vstain.napari.writer import write_image
from vstain.synth.demo import demo_pair

pytestmark = pytest.mark.gui


@pytest.fixture
def rgba_layer(make_napari_viewer):
    """A 2-level RGBA layer in micrometres, half of it not computed yet (alpha 0)."""
    rgb = make_tissue_image(300, 400)
    alpha = np.full((300, 400, 1), 255, np.uint8)
    alpha[:, 200:] = 0
    level0 = np.concatenate([rgb, alpha], axis=-1)
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        [level0, level0[::2, ::2]], rgb=True, scale=(0.25, 0.25), units="um", name="virtual"
    )
    return layer, rgb


@pytest.mark.parametrize("name", ["virtual.zarr", "virtual.ome.tif"])
def test_writer_round_trip(rgba_layer, tmp_path, name):
    layer, rgb = rgba_layer
    path = tmp_path / name
    assert layer.save(str(path), plugin="napari-vstain") == [str(path)]
    slide = open_slide(path)
    assert slide.pixel_size == pytest.approx(0.25)
    assert slide.levels[0].shape == (300, 400, 3)
    assert [lvl.shape[:2] for lvl in slide.levels] == [(300, 400), (150, 200)]
    pixels = slide.levels[0].compute().astype(int)
    tolerance = 0 if name.endswith(".zarr") else 4  # OME-TIFF tiles are JPEG
    assert np.abs(pixels[:, :200] - rgb[:, :200]).mean() <= tolerance
    assert np.abs(pixels[:, 208:] - 255).mean() <= tolerance  # not computed: white glass


def test_writer_refuses_other_formats_and_non_rgb(tmp_path):
    with pytest.raises(SlideError, match="OME-Zarr"):
        write_image(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8), {})
    with pytest.raises(SlideError, match="uint8 RGB"):
        write_image(str(tmp_path / "a.zarr"), np.zeros((8, 8), np.float32), {})


def test_sample_data(monkeypatch, tmp_path):
    monkeypatch.setattr(
        sample_data, "demo_pair", lambda: demo_pair(size=512, folder=tmp_path / "demo")
    )
    he, ihc = sample_data.demo_he_with_ihc()
    assert he[1]["name"] == sample_data.HE_NAME and ihc[1]["name"] == sample_data.IHC_NAME
    for data, kwargs, kind in (he, ihc):
        assert kind == "image" and kwargs["rgb"] and kwargs["scale"] == (0.5, 0.5)
        assert data[0].shape == (512, 512, 3)
    assert (tmp_path / "demo").is_dir(), "cached on disk"
    ((data, kwargs, kind),) = sample_data.skimage_ihc()
    np.testing.assert_array_equal(data, skimage.data.immunohistochemistry())
    assert kind == "image" and kwargs["rgb"]


def test_demo_docks_the_widget_and_stains_the_view(
    make_napari_viewer, monkeypatch, tmp_path, qtbot
):
    he, ihc = demo_pair(size=512, folder=tmp_path)
    checkpoint = tiny_checkpoint(tmp_path / "demo-model.safetensors")
    monkeypatch.setattr(
        "vstain.napari.checkpoint_picker.shipped_checkpoints", lambda: {"demo-model": checkpoint}
    )
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, he, ihc)
    assert widget.model_name == "demo-model" and viewer.canvas.grid.enabled
    demo.wait_until_idle(widget, timeout=60)
    names = [layer.name for layer in viewer.layers]
    assert names == [sample_data.HE_NAME, sample_data.IHC_NAME, "demo-model ck818 virtual IHC"]
    store = viewer.layers[-1].metadata["vstain_store"]
    assert store.startswith(str(tmp_path)), "the store lies next to the slide"
    assert np.asarray(viewer.layers[-1].data[0][..., 3]).max() == 255


def test_demo_without_a_model_asks_for_a_checkpoint(make_napari_viewer, monkeypatch, tmp_path):
    he, ihc = demo_pair(size=512, folder=tmp_path)
    monkeypatch.setattr("vstain.napari.checkpoint_picker.shipped_checkpoints", dict)
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown.append)
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, he, ihc)
    assert not widget.has_model and not widget.busy
    assert not widget.view_button.isEnabled()
    assert widget.model_box.currentText() == "Load checkpoint..."
    assert shown and "load a checkpoint" in shown[0]
