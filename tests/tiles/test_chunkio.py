"""Direct chunk writes (`ChunkIO`) and direct TIFF tile decoding give what zarr and dask give."""

import numpy as np
import zarr

from tests.tiles.conftest import make_tissue_image
from vstain.io import open_slide, write_ome_tiff
from vstain.io.tiff_tiles import tiff_tiles
from vstain.tiles.chunkio import ChunkIO


def test_chunk_writes_are_the_files_zarr_writes(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (4, 70, 90), dtype=np.uint8)
    direct, reference = (
        zarr.create_array(tmp_path / n, shape=image.shape, chunks=(4, 32, 32), dtype="uint8")
        for n in ("direct.zarr", "zarr.zarr")
    )
    io = ChunkIO(direct)
    assert io.direct
    for i in range(3):
        for j in range(3):
            io.write((0, i, j), image[:, 32 * i : 32 * (i + 1), 32 * j : 32 * (j + 1)])
    reference[:] = image
    np.testing.assert_array_equal(direct[:], image)
    files = sorted(
        p.relative_to(tmp_path / "zarr.zarr")
        for p in (tmp_path / "zarr.zarr").rglob("c/**/*")
        if p.is_file()
    )
    assert len(files) == 9
    for f in files:
        assert (tmp_path / "direct.zarr" / f).read_bytes() == (
            tmp_path / "zarr.zarr" / f
        ).read_bytes()
    np.testing.assert_array_equal(io.read((0, 2, 1)), image[:, 64:, 32:64])


def test_unwritten_chunks_read_as_fill_and_other_codecs_go_through_zarr(tmp_path):
    floats = zarr.create_array(
        tmp_path / "f.zarr",
        shape=(1, 40, 40),
        chunks=(1, 32, 32),
        dtype="float32",
        fill_value=np.nan,
    )
    assert np.isnan(ChunkIO(floats).read((0, 1, 1))).all()
    plain = zarr.create_array(
        tmp_path / "p.zarr", shape=(40, 40), chunks=(32, 32), dtype="int64", compressors=None
    )
    io = ChunkIO(plain)
    assert not io.direct
    io.write((1, 0), np.arange(8 * 32).reshape(8, 32))
    np.testing.assert_array_equal(plain[32:, :32], np.arange(8 * 32).reshape(8, 32))


def test_tiff_tiles_decode_like_the_dask_level(tmp_path):
    path = tmp_path / "s.ome.tif"
    write_ome_tiff(make_tissue_image(300, 420), path, pixel_size=0.5, tile=128)
    slide = open_slide(path)
    for k in range(len(slide.levels)):
        tiles, level = tiff_tiles(slide, k), slide.levels[k]
        assert tiles is not None
        for i in range(level.numblocks[0]):
            for j in range(level.numblocks[1]):
                np.testing.assert_array_equal(tiles.read(i, j), level.blocks[i, j].compute())
    png = tmp_path / "s.png"
    from skimage.io import imsave

    imsave(png, make_tissue_image(64, 64), check_contrast=False)
    assert tiff_tiles(open_slide(png), 0) is None
