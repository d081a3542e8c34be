import numpy as np
import pytest

from vstain.errors import RegionError
from vstain.tiles import TileGrid, order_tiles, read_window


def test_cores_partition_the_image_and_windows_have_model_size():
    grid = TileGrid((300, 420), tile=128, halo=8)
    covered = np.zeros((300, 420), int)
    for t in grid.tiles():
        x0, y0, x1, y1 = t.core
        covered[y0:y1, x0:x1] += 1
        wx0, wy0, wx1, wy1 = t.window
        assert (wx1 - wx0, wy1 - wy0) == (144, 144)
        rows, cols = t.inner
        assert (rows.stop - rows.start, cols.stop - cols.start) == (y1 - y0, x1 - x0)
        assert x0 % 128 == 0 and y0 % 128 == 0
    assert (covered == 1).all()
    assert grid.grid_shape == (3, 4)


def test_last_tile_is_shifted_inward_not_padded():
    grid = TileGrid((300, 420), tile=128, halo=8)
    last = grid.tile_at(2, 3)
    assert last.core == (384, 256, 420, 300)
    # the window's tile-sized centre ends at the image edge: only the halo lies outside
    assert last.window == (420 - 128 - 8, 300 - 128 - 8, 420 + 8, 300 + 8)


def test_image_smaller_than_tile_is_mirror_padded():
    img = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    grid = TileGrid((5, 7), tile=16, halo=2)
    (t,) = grid.tiles()
    win = read_window(img, t.window)
    assert win.shape == (20, 20, 3)
    rows, cols = t.inner
    np.testing.assert_array_equal(win[rows, cols], img)
    # symmetric padding, repeated: the first padded row mirrors row 0 and row 1
    np.testing.assert_array_equal(win[1, 2:9], img[0])
    np.testing.assert_array_equal(win[0, 2:9], img[1])


def test_read_window_matches_numpy_symmetric_pad():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    ref = np.pad(img, ((6, 6), (6, 6), (0, 0)), mode="symmetric")
    np.testing.assert_array_equal(read_window(img, (-6, -6, 20, 20)), ref[:26, :26])
    np.testing.assert_array_equal(read_window(img, (30, 25, 56, 46)), ref[31:52, 36:62])


def test_region_selects_intersecting_tiles_and_rejects_outside():
    grid = TileGrid((300, 420), tile=128)
    assert {t.index for t in grid.tiles((130, 10, 10, 130))} == {(0, 1), (1, 1)}
    for bad in [(400, 0, 50, 10), (-1, 0, 10, 10), (0, 0, 0, 10)]:
        with pytest.raises(RegionError, match="outside the image"):
            grid.tiles(bad)


def test_order_tiles_nearest_first():
    grid = TileGrid((512, 512), tile=128)
    ordered = order_tiles(grid.tiles(), toward=(450, 60))
    assert ordered[0].index == (0, 3)
    assert [t.index for t in order_tiles(grid.tiles())][:2] == [(0, 0), (0, 1)]


def test_chunk_cache_reads_like_the_array_and_decodes_each_chunk_once():
    import dask.array as da

    from vstain.tiles.cache import ChunkCache

    img = np.random.default_rng(2).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    decoded = []

    def load(block, block_info=None):
        decoded.append(block_info[None]["chunk-location"])
        return block

    level = da.from_array(img, chunks=(32, 48, 3)).map_blocks(load, dtype=np.uint8)
    cache = ChunkCache(level)
    grid = TileGrid((100, 130), tile=16, halo=5)
    for t in grid.tiles():
        np.testing.assert_array_equal(read_window(cache, t.window), read_window(img, t.window))
    assert len(decoded) == len(set(decoded)) == 4 * 3
