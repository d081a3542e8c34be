"""`vstain info --check`: every stored tile decoded; damaged tiles listed (exit 3), tiles the file
does not store listed and read as 0."""

import numpy as np
import pytest
import tifffile

from tests.io.builders import axes, rgb_image, set_tiff_tag, write_ngff
from vstain.cli import main
from vstain.io import open_slide
from vstain.io.check import check_slide


def tiled_tiff(path):
    """96 x 128 px in 32 px deflate tiles: 3 rows of 4."""
    tifffile.imwrite(path, rgb_image(96, 128), photometric="rgb", tile=(32, 32), compression="zlib")
    return path


def _tiff_drop_tile(path, index):
    set_tiff_tag(path, "TileByteCounts", 0, index=index)


def _tiff_damage_tile(path, index):
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00garbage!" * 2)


def ngff(path):
    image = np.moveaxis(rgb_image(96, 128), -1, 0)
    write_ngff(path, [image], axes("cyx"), [1.0, 0.5, 0.5], chunk=32)
    return path


def _zarr_drop_chunk(path, index):
    (path / "0" / "c" / "0" / str(index // 4) / str(index % 4)).unlink()


def _zarr_damage_chunk(path, index):
    (path / "0" / "c" / "0" / str(index // 4) / str(index % 4)).write_bytes(b"garbage")


@pytest.mark.parametrize(
    ("build", "drop", "damage", "name"),
    [
        (tiled_tiff, _tiff_drop_tile, _tiff_damage_tile, "s.tif"),
        (ngff, _zarr_drop_chunk, _zarr_damage_chunk, "s.zarr"),
    ],
)
def test_check_lists_missing_and_damaged_tiles(tmp_path, capsys, build, drop, damage, name):
    path = build(tmp_path / name)
    assert main(["info", "--check", str(path)]) == 0
    assert "check level 0: 12 tiles, all decoded" in capsys.readouterr().out

    drop(path, 5)  # row 1, column 1: not stored, read as 0
    slide = open_slide(path)
    assert not slide.read_region(32, 32, 32, 32).any()
    assert [(c.missing, c.damaged) for c in check_slide(slide)] == [([(1, 1)], [])]

    damage(path, 6)  # row 1, column 2
    [level] = check_slide(open_slide(path))
    assert level.missing == [(1, 1)] and [tile for tile, _ in level.damaged] == [(1, 2)]
    assert main(["info", "--check", str(path)]) == 3
    out = capsys.readouterr().out
    assert "12 tiles, 1 not stored (read as 0), first (1, 1), 1 damaged" in out
    assert "tile (1, 2): Cannot decode pixels" in out
