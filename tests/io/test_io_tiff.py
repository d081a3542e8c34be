"""Reading TIFF-family slides: SVS, OME-TIFF, plain TIFF, pixel conversions, bad files."""

import numpy as np
import pytest
import tifffile

from tests.io.builders import rgb_image, truncate, write_ome_tiff_subifds, write_svs
from vstain.errors import SlideError
from vstain.io import downsample_2x, open_slide


def test_svs_levels_pixels_and_metadata(tmp_path):
    levels = [rgb_image(600, 500), rgb_image(150, 125, 1), rgb_image(38, 32, 2)]
    path = tmp_path / "slide.svs"
    write_svs(path, levels, tile=128)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs and tif.series[0].kind == "svs"
        assert len(tif.series[0].levels) == 3

    slide = open_slide(path)

    assert [lvl.shape for lvl in slide.levels] == [lvl.shape for lvl in levels]
    assert slide.levels[0].chunksize == (128, 128, 3)
    assert all(lvl.dtype == np.uint8 for lvl in slide.levels)
    for ours, expected in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), expected)
    assert slide.pixel_size == pytest.approx(0.252)
    assert slide.metadata["format"] == "svs"
    assert slide.metadata["vendor"] == "Aperio"
    assert slide.metadata["magnification"] == 40
    assert slide.metadata["pixel_size_source"] == "Aperio MPP"
    assert slide.read_region(90, 100, 30, 20, level=1).shape == (20, 30, 3)


@pytest.mark.parametrize(
    ("size", "unit", "expected"), [(0.5, "µm", 0.5), (250.0, "nm", 0.25), (0.0004, "mm", 0.4)]
)
def test_ome_tiff_subifd_levels_and_physical_size_units(tmp_path, size, unit, expected):
    level0 = rgb_image(300, 260)
    levels = [level0, downsample_2x(level0, channel_axis=-1)]
    path = tmp_path / "slide.ome.tif"
    write_ome_tiff_subifds(path, levels, size, unit)

    slide = open_slide(path)

    assert slide.metadata["format"] == "ome"
    assert slide.pixel_size == pytest.approx(expected)
    assert [lvl.shape for lvl in slide.levels] == [(300, 260, 3), (150, 130, 3)]
    assert slide.levels[1].chunksize == (64, 64, 3)
    np.testing.assert_array_equal(slide.levels[1].compute(), levels[1])


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [((1e4 / 0.5, 1e4 / 0.5), "CENTIMETER", 0.5), ((25400 / 0.25, 25400 / 0.25), "INCH", 0.25)],
)
def test_plain_tiled_tiff_resolution_tags(tmp_path, resolution, unit, expected):
    image = rgb_image(200, 300)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(
        path, image, tile=(64, 64), photometric="rgb", resolution=resolution, resolutionunit=unit
    )

    slide = open_slide(path)

    assert len(slide.levels) == 1
    assert slide.levels[0].chunksize == (64, 64, 3)
    assert slide.pixel_size == pytest.approx(expected)
    assert slide.metadata["pixel_size_source"] == "TIFF XResolution"
    np.testing.assert_array_equal(slide.read_region(10, 20, 100, 50), image[20:70, 10:110])


def test_screen_resolution_is_not_a_pixel_size(tmp_path):
    path = tmp_path / "screen.tif"
    tifffile.imwrite(
        path, rgb_image(64, 64), photometric="rgb", resolution=(72, 72), resolutionunit="INCH"
    )
    slide = open_slide(path)
    assert slide.pixel_size is None
    assert "ignored" in slide.metadata["pixel_size_note"]


def test_no_resolution_means_unknown_pixel_size(tmp_path):
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, rgb_image(64, 64), photometric="rgb")
    assert open_slide(path).pixel_size is None


def test_rgba_tiff_drops_alpha(tmp_path):
    image = rgb_image(80, 90)
    rgba = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(32, 32))
    np.testing.assert_array_equal(open_slide(path).levels[0].compute(), image)


def test_uint16_tiff_divides_by_257_rounded(tmp_path):
    values = np.array([0, 128, 129, 257, 385, 386, 65535], np.uint16)
    image = np.repeat(np.tile(values, (4, 1))[..., None], 3, axis=2)
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    out = open_slide(path).levels[0].compute()
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 1, 1, 2, 255])


def test_palette_tiff_goes_through_colormap(tmp_path):
    rng = np.random.default_rng(3)
    colormap = rng.integers(0, 65536, (3, 256)).astype(np.uint16)
    indices = rng.integers(0, 256, (50, 60)).astype(np.uint8)
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, indices, photometric="palette", colormap=colormap)
    expected = ((colormap.T.astype(np.uint32) + 128) // 257).astype(np.uint8)[indices]
    np.testing.assert_array_equal(open_slide(path).levels[0].compute(), expected)


def test_grayscale_tiff_is_refused_with_advice(tmp_path):
    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, rgb_image(40, 40)[..., 0], photometric="minisblack")
    with pytest.raises(SlideError, match=r"gray\.tif is a grayscale image.*RGB"):
        open_slide(path)


def test_multichannel_fluorescence_tiff_is_refused(tmp_path):
    path = tmp_path / "fluo.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 40, 40), np.uint16),
        photometric="minisblack",
        metadata={"axes": "CYX"},
        ome=True,
    )
    with pytest.raises(SlideError, match=r"fluo\.tif stores 3 channels as MINISBLACK \(not RGB\)"):
        open_slide(path)


def test_focal_planes_are_refused(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((2, 40, 40, 3), np.uint8), photometric="rgb")
    with pytest.raises(SlideError, match="2 planes along axis"):
        open_slide(path)


def test_truncated_pyramidal_tiff_fails_at_open(tmp_path):
    path = tmp_path / "cut.svs"
    write_svs(path, [rgb_image(512, 512), rgb_image(128, 128, 1)], tile=128)
    truncate(path, 0.5)
    with pytest.raises(SlideError, match=r"cut\.svs is truncated or corrupt"):
        open_slide(path)


def test_truncated_ome_tiff_fails_at_open(tmp_path):
    path = tmp_path / "cut.ome.tif"
    level0 = rgb_image(256, 256)
    write_ome_tiff_subifds(path, [level0, level0[::2, ::2]], 0.5)
    truncate(path, 0.5)
    with pytest.raises(SlideError, match=r"cut\.ome\.tif .*(truncated|corrupt)"):
        open_slide(path)


def test_truncated_header_fails_at_open(tmp_path):
    path = tmp_path / "head.tif"
    tifffile.imwrite(path, rgb_image(64, 64), photometric="rgb")
    truncate(path, 0.001)  # 8 bytes: magic only
    with pytest.raises(SlideError, match=r"head\.tif"):
        open_slide(path)


def _corrupt_all_tiles_but_first(path):
    """Overwrite every tile of the first page except tile (0, 0) with bytes no codec decodes."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))[1:]
    data = bytearray(path.read_bytes())
    for offset, count in spans:
        data[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))
    return len(spans) + 1


def test_opening_and_reading_a_region_decode_only_the_tiles_needed(tmp_path):
    """A 5000 x 5000 TIFF whose tiles are all undecodable except the first: opening it (with its
    lazy pyramid) and reading inside the first tile work, so neither touches the other tiles;
    reading elsewhere reports the damage as SlideError."""
    path = tmp_path / "big.tif"
    tile = np.full((512, 512, 3), 200, np.uint8)
    tile[:10, :10] = 17
    n_tiles = 10 * 10
    tifffile.imwrite(
        path,
        (tile for _ in range(n_tiles)),
        shape=(5000, 5000, 3),
        dtype=np.uint8,
        tile=(512, 512),
        photometric="rgb",
        compression="deflate",
    )
    assert _corrupt_all_tiles_but_first(path) == n_tiles

    slide = open_slide(path)

    assert slide.shape == (5000, 5000)
    assert slide.levels[0].numblocks == (10, 10, 1)
    assert slide.metadata["computed_levels"] == len(slide.levels) - 1 == 4
    np.testing.assert_array_equal(slide.read_region(0, 0, 20, 20), tile[:20, :20])
    with pytest.raises(SlideError, match=r"Cannot decode pixels of .*big\.tif.*corrupt"):
        slide.read_region(2600, 2600, 10, 10)


def test_unknown_ome_unit_gives_no_pixel_size_and_says_so(tmp_path):
    path = tmp_path / "odd.ome.tif"
    write_ome_tiff_subifds(path, [rgb_image(64, 64)], 3.0, unit="pixel")
    with pytest.warns(UserWarning, match="'pixel' is not a length unit"):
        slide = open_slide(path)
    assert slide.pixel_size is None
    assert "pixel" in slide.metadata["pixel_size_note"]


def test_svs_with_ycbcr_jpeg_tiles_reads_as_rgb(tmp_path):
    """Scanners store SVS tiles as YCbCr JPEG (tifffile encodes RGB that way too); they read as
    RGB."""
    y, x = np.mgrid[0:256, 0:256]
    image = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    path = tmp_path / "jpeg.svs"
    write_svs(path, [image, image[::4, ::4]], tile=128, compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.YCBCR
    out = open_slide(path).levels[0].compute()
    assert np.abs(out.astype(int) - image).mean() < 2
