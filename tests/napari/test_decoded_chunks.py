"""An output store's levels read into memory once, with finished tiles' pixels pasted in."""

import numpy as np
import zarr

from vstain.io import open_ome_zarr_levels
from vstain.napari.decoded_chunks import CachedLevel, DecodedChunks
from vstain.pipeline import OUTPUT_SPECS
from vstain.pipeline.worker import _tile_pixels
from vstain.tiles import OutputStore, TileGrid
from vstain.tiles.chunkio import ChunkIO

IHC = OUTPUT_SPECS["ihc"]


def store_with_tiles(path, tiles):
    store = OutputStore.create(
        path, shape=(300, 350), tile=64, specs=[IHC], pixel_size=1.0, settings={}
    )
    grid = TileGrid((300, 350), 64)
    for value, (row, col) in enumerate(tiles, start=1):
        tile = grid.tile_at(row, col)
        x0, y0, x1, y1 = tile.core
        store.write_tile(tile, {"ihc": IHC.encode(np.full((3, y1 - y0, x1 - x0), value / 10))})
    store.finish()
    return store, grid


def zarr_level(path, k) -> np.ndarray:
    return np.asarray(zarr.open_array(path / "ihc" / str(k), mode="r")[:]).transpose(1, 2, 0)


def test_any_numpy_index_reads_what_the_store_holds(tmp_path):
    store, _ = store_with_tiles(tmp_path / "o.zarr", [(1, 2), (4, 5)])
    chunks = DecodedChunks(open_ome_zarr_levels(store.path / "ihc"))
    for k in range(len(chunks.shapes)):
        level, expected = CachedLevel(chunks, k, rgb=True), zarr_level(store.path, k)
        assert level.shape == expected.shape and level.dtype == expected.dtype
        for key in [
            (slice(None),),
            (slice(10, 200), slice(60, 333)),
            (slice(5, 290, 3), slice(None, None, 7), 3),
            (Ellipsis, 0),
            (-1, slice(-40, None)),
            (7,),
        ]:
            np.testing.assert_array_equal(level[key], expected[key])
        np.testing.assert_array_equal(np.asarray(level), expected)
    alpha = CachedLevel(chunks, 0, rgb=False)  # the first channel of a non-RGB output
    np.testing.assert_array_equal(
        alpha[100:140, 120:200], zarr_level(store.path, 0)[100:140, 120:200, 0]
    )


def test_pasted_tiles_show_without_reading_the_store_again(tmp_path):
    store, grid = store_with_tiles(tmp_path / "o.zarr", [(1, 2)])
    chunks = DecodedChunks(open_ome_zarr_levels(store.path / "ihc"))
    levels = [CachedLevel(chunks, k, rgb=True) for k in range(len(chunks.shapes))]
    for level in levels:
        np.asarray(level)  # every chunk decoded once
    later = OutputStore.open(store.path)
    tile = grid.tile_at(3, 4)
    later.write_tile(tile, {"ihc": IHC.encode(np.full((3, 64, 64), 0.7))})
    later.finish()
    assert np.asarray(levels[0])[3 * 64 + 5, 4 * 64 + 5, 3] == 0, "not read again by itself"

    io = {"ihc": [ChunkIO(a) for a in open_ome_zarr_levels(store.path / "ihc")]}
    shares = _tile_pixels(io, {"ihc": IHC}, tile)["ihc"]
    assert [share[0] for share in shares] == list(range(len(chunks.shapes)))
    for k, y, x, block in shares:
        chunks.paste(k, y, x, block)
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(np.asarray(level), zarr_level(store.path, k))
