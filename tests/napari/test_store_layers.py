"""Layers over an output store: placement over the slide, one layer kind per output kind."""

import numpy as np
import pytest
from napari.layers import Image, Labels

from vstain.napari.store_layers import aligned_placement, refresh, show_outputs
from vstain.pipeline import OUTPUT_SPECS
from vstain.tiles import OutputSpec, OutputStore, TileGrid

pytestmark = pytest.mark.gui
SPECS = [OUTPUT_SPECS[name] for name in ("ihc", "uncertainty", "segmentation")]


def displayed(layer) -> np.ndarray:
    """What napari sliced for display (napari's dask cache would keep this stale)."""
    return np.asarray(layer._slice.image.raw)


def test_placement_puts_each_coarse_pixel_over_the_pixels_it_averages(make_napari_viewer):
    viewer = make_napari_viewer()
    he = viewer.add_image(
        np.zeros((64, 64, 3), np.uint8), scale=(0.5, 0.5), translate=(10, 20), units="um"
    )
    for downsample in (1, 2, 4):
        placement = aligned_placement(he, downsample)
        coarse = viewer.add_image(np.zeros((64 // downsample, 64 // downsample)), **placement)
        for j in (0, 3):
            block = [he.data_to_world((j * downsample + k, 0))[0] for k in range(downsample)]
            assert coarse.data_to_world((j, 0))[0] == pytest.approx(np.mean(block))
        assert [str(u) for u in coarse.units] == ["micrometer", "micrometer"]
    assert aligned_placement(he, 1)["scale"] == (0.5, 0.5)
    assert aligned_placement(he, 1)["translate"] == (10, 20)


def test_every_output_gets_its_layer_and_refresh_displays_new_tiles(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    he = viewer.add_image(np.zeros((600, 700, 3), np.uint8), scale=(0.5, 0.5), units="um")
    store = OutputStore.create(
        tmp_path / "o.zarr", shape=(300, 350), tile=64, specs=SPECS, pixel_size=1.0, settings={}
    )
    layers = show_outputs(viewer, store.path, he, 2.0, "m ck818")
    ihc, uncertainty, segmentation = layers
    assert [layer.name for layer in layers] == [
        "m ck818 virtual IHC",
        "m ck818 uncertainty",
        "m ck818 segmentation",
    ]
    assert isinstance(ihc, Image) and ihc.rgb and ihc.multiscale
    assert isinstance(uncertainty, Image) and uncertainty.colormap.name == "magma"
    assert isinstance(segmentation, Labels)
    for layer in layers:
        np.testing.assert_allclose(layer.scale, (1.0, 1.0))
        np.testing.assert_allclose(layer.translate, (0.25, 0.25))
    assert displayed(ihc)[..., 3].max() == 0

    tile = TileGrid((300, 350), 64).tile_at(1, 2)
    store.write_tile(
        tile,
        {
            "ihc": SPECS[0].encode(np.full((3, 64, 64), 0.5)),
            "uncertainty": np.full((1, 64, 64), 0.25, np.float32),
            "segmentation": np.full((1, 64, 64), 7, np.int32),
        },
    )
    store.finish()
    refresh(layers)
    shown = displayed(ihc)  # level 0 here: the whole 300 x 350 image fits the canvas
    assert shown.shape == (300, 350, 4) and (shown[..., 3] == 255).sum() == 64 * 64
    assert np.asarray(ihc.data[0][64:128, 128:192]).tolist() == [[[128, 128, 128, 255]] * 64] * 64
    assert np.asarray(uncertainty.data[0][64:128, 128:192]).min() == 0.25
    assert np.isnan(np.asarray(uncertainty.data[0][:64])).all()
    # one object, its id offset by the tile's grid index (row 1 x 6 columns + col 2) x 64²
    assert set(np.unique(np.asarray(segmentation.data[0]))) == {0, 1 + 8 * 64 * 64}
    assert show_outputs(viewer, store.path, he, 2.0, "m ck818") == layers, "no duplicates"


def test_keypoints_show_as_points_of_finished_tiles(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    he = viewer.add_image(np.zeros((256, 256, 3), np.uint8), scale=(0.5, 0.5), units="um")
    specs = [SPECS[0], OutputSpec("keypoints", "labels", 1, background=0)]
    store = OutputStore.create(
        tmp_path / "k.zarr", shape=(128, 128), tile=64, specs=specs, pixel_size=1.0, settings={}
    )
    ihc, points = show_outputs(viewer, store.path, he, 2.0, "k-stain ck818")
    assert points.name == "k-stain ck818 keypoints" and len(points.data) == 0
    grid = TileGrid((128, 128), 64)
    for (i, j), (y, x) in (((0, 1), (5, 9)), ((1, 0), (60, 3))):
        raster = np.zeros((1, 64, 64), np.int32)
        raster[0, y, x] = 1
        store.write_tile(
            grid.tile_at(i, j), {"ihc": specs[0].encode(np.ones((3, 64, 64))), "keypoints": raster}
        )
        store.flush()
        refresh([ihc, points])
    assert sorted(map(tuple, points.data)) == [(5, 73), (124, 3)]  # level-0 store (y, x)
    np.testing.assert_allclose(points.scale, (1.0, 1.0))
    np.testing.assert_allclose(points.translate, (0.25, 0.25))
