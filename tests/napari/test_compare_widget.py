"""The Compare widget in a real viewer: register an adjacent section, show it aligned, compare."""

import numpy as np
import pytest

from tests.napari.conftest import tiny_checkpoint
from vstain.napari.compare_widget import HE_POINTS, IHC_POINTS, CompareWidget
from vstain.pipeline import stain_slide
from vstain.synth import make_spec
from vstain.synth.export import export_pair

pytestmark = pytest.mark.gui
SIZE = 1024


@pytest.fixture(scope="module")
def adjacent(tmp_path_factory):
    """A 1024 px simulated adjacent-section pair, its true H&E -> IHC affine, a virtual store."""
    folder = tmp_path_factory.mktemp("adjacent")
    he, ihc = folder / "he.ome.tif", folder / "ihc.ome.tif"
    info = export_pair(make_spec(4, "ck818", SIZE, mode="adjacent-section"), he, ihc)
    store = folder / "virtual.zarr"
    stain_slide(he, tiny_checkpoint(folder / "tiny.safetensors"), store, device="cpu")
    return he, ihc, np.asarray(info["he_to_ihc_affine"]), store


@pytest.fixture
def compare(make_napari_viewer, adjacent):
    he_path, ihc_path, truth, store = adjacent
    viewer = make_napari_viewer()
    (he,) = viewer.open(str(he_path), plugin="napari-vstain")
    (real,) = viewer.open(str(ihc_path), plugin="napari-vstain")
    from vstain.napari.store_layers import show_outputs

    (virtual,) = show_outputs(viewer, store, he, 1.0, "tiny ck818")
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare")
    widget.he_box.setCurrentText(he.name)
    widget.real_box.setCurrentText(real.name)
    widget.virtual_box.setCurrentText(virtual.name)
    return viewer, widget, he, real, truth


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


def world_of_ihc_pixel(real, xy):
    """World (y, x) where the real IHC layer now shows its level-0 pixel (x, y)."""
    return real._data_to_world((xy[1], xy[0]))


def test_register_places_the_real_ihc_over_the_he_and_compares(compare, qtbot):
    viewer, widget, he, real, truth = compare
    widget.register()
    wait(qtbot, widget)
    reg = widget.registration
    assert reg is not None and reg.ok, widget.status_label.text()
    he_xy = np.array([[300.0, 300.0], [700.0, 400.0], [500.0, 750.0]])
    true_xy = he_xy @ truth[:2, :2].T + truth[:2, 2]  # affine part of the simulated section
    assert np.abs(reg.he_to_ihc_points(he_xy) - true_xy).max() < 10  # elastic parts aside
    # the real IHC layer shows each IHC pixel over the H&E pixel the registration maps to it
    for p, q in zip(he_xy, reg.he_to_ihc_points(he_xy), strict=True):
        shown = world_of_ihc_pixel(real, q)
        expected = he._data_to_world((p[1], p[0]))
        assert np.abs(np.subtract(shown, expected)).max() / he.scale[-1] < 0.01

    widget.compute_difference()
    wait(qtbot, widget)
    diff = viewer.layers["DAB difference (virtual - real)"]
    labels = next(layer for layer in viewer.layers if layer.name.startswith("discordance"))
    assert diff.data.shape == labels.data.shape and np.isfinite(diff.data).mean() > 0.5
    assert -diff.contrast_limits[0] == diff.contrast_limits[1] > 0
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3}
    assert tuple(diff.scale) == tuple(he.scale) and tuple(diff.units) == tuple(he.units)
    assert widget.table.rowCount() == 3 and widget.table.item(2, 0).text() == "virtual - real"


def test_control_points_refit_the_registration(compare, qtbot):
    viewer, widget, he, real, truth = compare
    widget.add_control_points()
    he_xy = np.array([[200.0, 250.0], [800.0, 300.0], [450.0, 820.0], [700.0, 700.0]])
    ihc_xy = he_xy @ truth[:2, :2].T + truth[:2, 2]
    viewer.layers[HE_POINTS].data = [he._data_to_world((y, x)) for x, y in he_xy]
    viewer.layers[IHC_POINTS].data = [real._data_to_world((y, x)) for x, y in ihc_xy]
    widget.refit_from_points()
    reg = widget.registration
    assert np.allclose(reg.matrix, truth, atol=1e-6) and reg.ok
    viewer.layers[IHC_POINTS].data = viewer.layers[IHC_POINTS].data[:2]
    widget.refit_from_points()  # a notification, not an exception
    assert np.allclose(widget.registration.matrix, truth, atol=1e-6)


def test_k_stain_keypoints_and_their_displacements_show_over_the_he(
    compare, qtbot, tmp_path, model_loads
):
    import torch

    from vstain.models import create, save_checkpoint
    from vstain.napari.compare_widget import DISPLACEMENTS, KEYPOINTS_HE, KEYPOINTS_IHC

    viewer, widget, he, _, _ = compare
    widget.register()
    wait(qtbot, widget)
    torch.manual_seed(0)
    model = create("k-stain", "small", pixel_size=0.5)
    checkpoint = save_checkpoint(model, tmp_path / "k.safetensors")
    widget.show_keypoints(tiny_checkpoint(tmp_path / "p.safetensors"))  # not k-stain: notified
    assert KEYPOINTS_HE not in viewer.layers
    widget.show_keypoints(checkpoint)
    wait(qtbot, widget)
    n = model.config["n_keypoints"]
    he_points, ihc_points = viewer.layers[KEYPOINTS_HE].data, viewer.layers[KEYPOINTS_IHC].data
    assert he_points.shape == ihc_points.shape == (n, 2)
    vectors = viewer.layers[DISPLACEMENTS].data
    np.testing.assert_allclose(vectors[:, 0], he_points)
    np.testing.assert_allclose(vectors[:, 0] + vectors[:, 1], ihc_points)
    extent = np.asarray(he.level_shapes[0][:2]) * he.scale
    assert (he_points >= 0).all() and (he_points <= extent).all()
    assert "keypoint pairs" in widget.status_label.text()
    # pairs agreeing with the fitted affine are yellow, the others red
    colours = viewer.layers[DISPLACEMENTS].edge_color
    assert colours.shape == (n, 4)
    assert set(map(tuple, colours.round(1))) <= {(1.0, 1.0, 0.0, 1.0), (1.0, 0.2, 0.2, 1.0)}
    assert "agreeing with K-Stain's affine" in widget.status_label.text()
    assert model_loads == [("k.safetensors", False)]  # on the job thread, the other never
