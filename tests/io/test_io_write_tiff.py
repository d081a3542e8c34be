"""Pyramidal OME-TIFF writing: round trips, tiffslide cross-check, atomic output, bounded memory."""

import numpy as np
import pytest
import tifffile
import tiffslide

from tests.io.builders import (
    assert_levels_are_pyramid_of,
    lazy_pattern,
    pattern,
    peak_memory,
    rgb_image,
    write_svs,
)
from vstain.errors import OutputExistsError, SlideError
from vstain.io import open_slide, write_ome_tiff


def test_lossless_round_trip_from_one_level(tmp_path):
    image = rgb_image(700, 600)
    path = tmp_path / "out.ome.tif"
    calls = []
    write_ome_tiff(
        image,
        path,
        pixel_size=0.5,
        tile=128,
        compression="deflate",
        progress=lambda done, total: calls.append((done, total)),
    )

    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.series[0].kind == "ome"
        page = tif.pages[0]
        assert page.is_tiled and page.tile == (128, 128)
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert len(page.tags["SubIFDs"].value) == 2
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
    slide = open_slide(path)
    assert slide.pixel_size == pytest.approx(0.5)
    assert_levels_are_pyramid_of(slide, image, 3)
    total = 2 * (6 * 5 + 3 * 3 + 2 * 2)
    assert calls[-1] == (total, total)


def test_slide_round_trip_keeps_levels_and_pixel_size(tmp_path):
    levels = [rgb_image(512, 384), rgb_image(128, 96, 1)]
    write_svs(tmp_path / "s.svs", levels, tile=64)
    write_ome_tiff(
        open_slide(tmp_path / "s.svs"), tmp_path / "s.ome.tif", tile=64, compression="deflate"
    )
    copy = open_slide(tmp_path / "s.ome.tif")
    assert copy.pixel_size == pytest.approx(0.252)
    for ours, exp in zip(copy.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), exp)


@pytest.mark.parametrize("compression", ["deflate", "jpeg"])
def test_tiffslide_reads_what_we_write(tmp_path, compression):
    image = rgb_image(600, 800)
    path = tmp_path / "x.ome.tif"
    write_ome_tiff(image, path, pixel_size=0.25, tile=128, compression=compression)
    ours = open_slide(path)

    with tiffslide.TiffSlide(path) as theirs:
        assert theirs.level_count == len(ours.levels) == 3
        assert theirs.level_dimensions == tuple((lvl.shape[1], lvl.shape[0]) for lvl in ours.levels)
        assert float(theirs.properties["tiffslide.mpp-x"]) == pytest.approx(0.25)
        for level, (x, y) in [(0, (130, 250)), (1, (40, 60))]:
            downsample = round(theirs.level_downsamples[level])
            region = np.asarray(
                theirs.read_region((x * downsample, y * downsample), level, (90, 70))
            )
            np.testing.assert_array_equal(region[..., :3], ours.read_region(x, y, 90, 70, level))


def test_jpeg_is_close_and_smaller(tmp_path):
    y, x = np.mgrid[0:512, 0:512]
    image = np.stack([x // 2, y // 2, (x + y) // 4], axis=-1).astype(np.uint8)
    write_ome_tiff(image, tmp_path / "j.ome.tif", tile=256, quality=90)
    write_ome_tiff(image, tmp_path / "d.ome.tif", tile=256, compression="deflate")
    out = open_slide(tmp_path / "j.ome.tif").levels[0].compute()
    assert np.abs(out.astype(int) - image).mean() < 1.5
    with tifffile.TiffFile(tmp_path / "j.ome.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    assert (tmp_path / "j.ome.tif").stat().st_size < (tmp_path / "d.ome.tif").stat().st_size


def test_existing_output_refused_unless_overwrite(tmp_path):
    path = tmp_path / "o.ome.tif"
    path.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=r"o\.ome\.tif exists"):
        write_ome_tiff(rgb_image(32, 32), path)
    write_ome_tiff(rgb_image(32, 32), path, overwrite=True, compression="deflate")
    np.testing.assert_array_equal(open_slide(path).levels[0].compute(), rgb_image(32, 32))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SlideError, match="multiple of 16"):
        write_ome_tiff(rgb_image(32, 32), tmp_path / "a.tif", tile=100)
    with pytest.raises(SlideError, match="use jpeg or deflate"):
        write_ome_tiff(rgb_image(32, 32), tmp_path / "a.tif", compression="lzw")


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_no_partial_file(tmp_path, existing):
    path = tmp_path / "slide.ome.tif"
    if existing:
        path.write_bytes(b"previous result")

    def interrupt(done, total):
        if done > total * 3 // 4:  # while TIFF tiles are being written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_ome_tiff(
            rgb_image(600, 600),
            path,
            tile=128,
            compression="deflate",
            overwrite=True,
            progress=interrupt,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == (["slide.ome.tif"] if existing else [])
    if existing:
        assert path.read_bytes() == b"previous result"


def test_a_killed_writes_leftovers_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "slide.ome.tif"
    leftover = tmp_path / ".slide.ome.tif.partial"
    (leftover / "pyramid.zarr").mkdir(parents=True)  # as a SIGKILL mid-write leaves it
    write_ome_tiff(rgb_image(64, 64), path, compression="deflate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.ome.tif"]


def test_writing_a_lazy_image_keeps_memory_bounded(tmp_path):
    """As for OME-Zarr: peak traced memory does not grow with the image."""
    peaks = {
        size: peak_memory(
            write_ome_tiff,
            lazy_pattern(size, size),
            tmp_path / f"{size}.tif",
            tile=256,
            compression="deflate",
        )
        for size in (1536, 3072)
    }
    assert peaks[3072] < peaks[1536] + 4 * 2**20
    assert peaks[3072] < 3072 * 3072 * 3 / 2
    slide = open_slide(tmp_path / "3072.tif")
    np.testing.assert_array_equal(
        slide.read_region(2000, 1000, 300, 400), pattern(3072, 3072)[1000:1400, 2000:2300]
    )
