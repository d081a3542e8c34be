"""Background tiles carry what the model paints on glass, so no tile-shaped step shows."""

import dask.array as da
import numpy as np
import zarr

from vstain.io import Slide, write_ome_tiff
from vstain.pipeline import stain_slide
from vstain.pipeline.glass import glass_window
from vstain.synth import synth_slide
from vstain.tiles.store import BACKGROUND, COMPUTED

GLASS_FROM = 300  # x where the glass band starts: tile column 2 (256-384) is part tissue


def test_glass_in_background_tiles_matches_glass_in_computed_tiles(tmp_path):
    he = np.asarray(synth_slide("ck818", size=512, seed=11).he).copy()
    noise = np.random.default_rng(0).integers(-2, 3, he[:, GLASS_FROM:].shape)
    he[:, GLASS_FROM:] = np.clip(244 + noise, 0, 255)
    path = tmp_path / "he.ome.tif"
    write_ome_tiff(he, path, pixel_size=0.5, compression="deflate")
    out = tmp_path / "v.zarr"
    stain_slide(path, "pix2pix", out, tile=128)

    store = zarr.open_group(out, mode="r")
    done = store["done"][:]
    assert (done[:, 2] == COMPUTED).all() and (done[:, 3] == BACKGROUND).all()
    ihc = store["ihc"]["0"][:3].astype(float)  # C, Y, X
    painted = ihc[:, :, 320:384].mean(axis=(1, 2))  # glass the model computed
    written = ihc[:, :, 384:].mean(axis=(1, 2))  # glass of background tiles
    assert np.abs(painted - written).max() <= 3, (painted, written)
    glass = store.attrs["vstain"]["glass"]
    assert "glass" in glass["from"] and len(glass["rgb"]) == 3


def test_glass_window_is_read_from_the_slides_own_glass_where_it_fits(tmp_path):
    he = np.asarray(synth_slide("ck818", size=512, seed=11).he).copy()
    wide = np.concatenate([he, np.full((512, 600, 3), 240, np.uint8)], axis=1)
    window, where = glass_window(Slide(tmp_path / "s.png", [da.from_array(wide)], 0.5), 0, 128)
    assert where.startswith("glass window") and window.shape == (128, 128, 3)
    assert (window == 240).all()
    all_tissue = Slide(tmp_path / "t.png", [da.from_array(he[:200, :200])], 0.5)
    assert (
        glass_window(all_tissue, 0, 128) is None or "uniform" in glass_window(all_tissue, 0, 128)[1]
    )
