"""The npe2 manifest and the slide reader, in a real napari viewer (runs under Xvfb)."""

import subprocess
import sys

import numpy as np
import pytest

from tests.tiles.conftest import make_tissue_image
from vstain.io import write_ome_tiff
from vstain.napari.reader import get_reader, read_slide

pytestmark = pytest.mark.gui


def test_manifest_validates():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-vstain"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_reader_refuses_other_paths_fast(tmp_path):
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None


@pytest.mark.parametrize("name", ["a.mrxs", "b.vms", "c.dcm", "d.ndpi", "e.SCN"])
def test_reader_takes_the_formats_openslide_reads(tmp_path, name):
    assert get_reader(str(tmp_path / name)) is read_slide


def test_reader_gives_multiscale_layer_with_micrometre_scale(make_napari_viewer, tmp_path):
    path = tmp_path / "slide.ome.tif"
    image = make_tissue_image(600, 800)
    write_ome_tiff(image, path, pixel_size=0.25, compression="deflate", tile=256)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-vstain")
    assert layer.multiscale and layer.rgb
    assert tuple(layer.scale) == (0.25, 0.25)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["pixel_size_um"] == 0.25
    np.testing.assert_array_equal(
        np.asarray(layer.data[0][100:110, 200:210]), image[100:110, 200:210]
    )


def test_broken_slide_is_a_notification_not_a_crash(make_napari_viewer, tmp_path, monkeypatch):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + b"\x00" * 20)
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    assert viewer.open(str(path), plugin="napari-vstain") == []
    assert len(viewer.layers) == 0
    assert shown and "broken.svs" in shown[0]
