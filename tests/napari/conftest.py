"""A small simulated slide and tiny checkpoints shared by the napari tests."""

import threading
from pathlib import Path

import pytest
import torch

from vstain.io import write_ome_tiff
from vstain.models import create, save_checkpoint
from vstain.synth import synth_slide

SLIDE_SIZE = 1024
PIXEL_SIZE = 0.5
TILE = 128


@pytest.fixture(scope="session")
def slide_path(tmp_path_factory):
    """A 1024 px simulated CK8/18 H&E slide at 0.5 µm/px, pyramidal OME-TIFF."""
    path = tmp_path_factory.mktemp("slide") / "he.ome.tif"
    he = synth_slide("ck818", size=SLIDE_SIZE, seed=3, pixel_size=PIXEL_SIZE).he
    write_ome_tiff(he, path, pixel_size=PIXEL_SIZE, compression="deflate", tile=256)
    return path


def tiny_checkpoint(path, seed: int = 0, pixel_size: float = PIXEL_SIZE):
    """An untrained pix2pix-small checkpoint with 128 px tiles (at the slide's pixel size)."""
    torch.manual_seed(seed)
    model = create("pix2pix", "small", tile_size=TILE, markers=["ck818"], pixel_size=pixel_size)
    return save_checkpoint(model, path)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def model_loads(monkeypatch):
    """(checkpoint file name, loaded on the main thread?) of every model the pipeline loads."""
    from vstain.pipeline import loaded_model

    loads, load = [], loaded_model.load_model

    def recorded(model, device="auto"):
        loads.append((Path(model).name, threading.current_thread() is threading.main_thread()))
        return load(model, device)

    monkeypatch.setattr(loaded_model, "load_model", recorded)
    return loads


@pytest.fixture
def notes():
    """(severity, message) of every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    got = []

    def record(n):
        got.append((str(n.severity), n.message))

    notification_manager.notification_ready.connect(record)
    yield got
    notification_manager.notification_ready.disconnect(record)


def docked_stain_widget(make_napari_viewer, slide_path, checkpoint, out_dir):
    """(viewer, H&E layer, docked Virtual stain widget) with ``checkpoint`` chosen and stores in
    ``out_dir``."""
    from vstain.napari.stain_widget import VirtualStainWidget

    viewer = make_napari_viewer()
    (he,) = viewer.open(str(slide_path), plugin="napari-vstain")
    widget = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    assert widget.load_checkpoint(checkpoint)
    widget.folder_edit.setText(str(out_dir))
    return viewer, he, widget
