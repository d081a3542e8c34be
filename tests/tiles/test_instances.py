"""Instance labels stay whole across tile borders."""

import shutil

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.draw import disk

from vstain.errors import OutputExistsError
from vstain.io.slide import Slide
from vstain.tiles import OutputSpec, OutputStore, TileGrid, run_tiles, stain_level
from vstain.tiles.instances import merged_ids, relabel

CELLS = OutputSpec("cells", "instances", 1, background=0)
TILE = 64
H, W = 600, 540


def label_dark(batch):
    """Cells of each window: 4-connected components of dark pixels, numbered 1.. per window."""
    dark = batch.mean(axis=1) < 0.5
    return {"cells": np.stack([ndimage.label(d)[0][None] for d in dark])}


@pytest.fixture
def cells_slide(tmp_path):
    """White with dark discs and rings, many of them across tile borders; three levels."""
    image = np.full((H, W, 3), 255, np.uint8)
    rng = np.random.default_rng(3)
    n = 300
    for y, x, r in rng.integers((0, 0, 3), (H, W, 11), size=(n, 3)):
        image[disk((y, x), r, shape=image.shape[:2])] = 40
        image[disk((y, x), r // 2, shape=image.shape[:2])] = 255 if r > 8 else 40
    image[130:134, 5:300] = 40  # one long object across five tiles
    path = tmp_path / "cells.png"
    return Slide(path, [da.from_array(image, chunks=(TILE, TILE, 3))], pixel_size=0.5)


def stored(out, level=0) -> np.ndarray:
    return np.asarray(zarr.open_array(out / "cells" / str(level), mode="r")[0])


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings split the image into the same objects (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_merged_ids_names_each_object_after_its_smallest_id():
    pairs = np.array([[9, 4], [4, 12], [30, 21]])
    ids, objects = merged_ids(pairs)
    assert ids.tolist() == [9, 12, 30] and objects.tolist() == [4, 4, 21]
    block = np.array([[0, 9, 12], [4, 30, 7]])
    assert relabel(block, ids, objects).tolist() == [[0, 4, 4], [4, 21, 7]]
    assert [len(x) for x in merged_ids(np.zeros((0, 2), np.int64))] == [0, 0]


def test_tiled_instances_equal_whole_image_labels(cells_slide, tmp_path):
    out = tmp_path / "o.zarr"
    stain_level(cells_slide, label_dark, out, specs=[CELLS], tile=TILE, min_tissue=0)
    got = stored(out)
    whole = ndimage.label(np.asarray(cells_slide.levels[0]).mean(axis=2) < 128)[0]
    assert (got > 0).sum() == (whole > 0).sum() and same_objects(got, whole)
    assert (
        len(np.unique(got))
        < 0.8
        * sum(  # objects cut by borders were joined
            len(np.unique(got[y : y + TILE, x : x + TILE]))
            for y in range(0, H, TILE)
            for x in range(0, W, TILE)
        )
    )
    for k in (1, 2):  # coarse levels show the joined ids
        assert np.array_equal(stored(out, k), got[:: 2**k, :: 2**k])


def test_instances_of_a_resumed_run_equal_one_run(cells_slide, tmp_path):
    """Tiles computed in two runs, the second half first, give the same ids as one run."""
    once, twice = tmp_path / "once.zarr", tmp_path / "twice.zarr"
    stain_level(cells_slide, label_dark, once, specs=[CELLS], tile=TILE, min_tissue=0)
    for region, resume in (((256, 0, W - 256, H), False), ((0, 0, 256, H), True)):
        stain_level(
            cells_slide,
            label_dark,
            twice,
            specs=[CELLS],
            tile=TILE,
            min_tissue=0,
            region=region,
            resume=resume,
        )
    assert OutputStore.open(twice).done_map().all()
    for k in (0, 1):
        assert np.array_equal(stored(once, k), stored(twice, k))


def test_concurrent_writers_objects_are_joined_by_complete(cells_slide, tmp_path):
    """Batch workers write blocks of tiles into one store; `complete` (run once every block is
    done) joins the objects their borders cut, as in a single run."""
    once, shared = tmp_path / "once.zarr", tmp_path / "shared.zarr"
    stain_level(cells_slide, label_dark, once, specs=[CELLS], tile=TILE, min_tissue=0)
    level = cells_slide.levels[0]
    grid = TileGrid(level.shape[:2], TILE, 0)
    OutputStore.create(
        shared,
        shape=level.shape[:2],
        tile=TILE,
        specs=[CELLS],
        pixel_size=None,
        settings={},
        done_block=4,
    )
    tiles = grid.tiles()
    for block in (0, 1):  # two writers: tile columns 0-3 and 4-8
        mine = [t for t in tiles if (t.index[1] >= 4) == block]
        run_tiles(level, label_dark, OutputStore.open(shared, concurrent=True), grid, mine)
    OutputStore.open(shared, concurrent=True).complete()
    for k in (0, 1, 2):
        assert np.array_equal(stored(once, k), stored(shared, k))


def test_a_store_without_border_ids_is_refused_with_advice(cells_slide, tmp_path):
    out = tmp_path / "old.zarr"
    stain_level(cells_slide, label_dark, out, specs=[CELLS], tile=TILE, min_tissue=0)
    shutil.rmtree(out / "edges")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        OutputStore.open(out)
