"""Hostile or corrupt inputs: sizes claimed by headers are refused before anything is allocated,
and damaged files end in a one-line `SlideError`, never a traceback or a silently wrong image."""

import functools
import json
import shutil

import imagecodecs
import numpy as np
import pytest
import tifffile

from tests.io.builders import (
    axes,
    rgb_image,
    set_jpeg_size,
    set_png_size,
    set_tiff_tag,
    write_ngff,
    write_svs,
)
from vstain.errors import SlideError, VstainError
from vstain.io import open_slide
from vstain.io.limits import json_depth, loads_bounded


def png(path, width, height):
    path.write_bytes(imagecodecs.png_encode(rgb_image(8, 8)))
    set_png_size(path, width, height)


def jpeg(path, width, height):
    path.write_bytes(imagecodecs.jpeg8_encode(rgb_image(16, 16)))
    set_jpeg_size(path, width, height)


def tiff(path, width, height, strips=False):
    """A small TIFF whose header then claims ``width`` x ``height`` (one strip if ``strips``)."""
    layout = {"rowsperstrip": 64} if strips else {"tile": (16, 16)}
    tifffile.imwrite(path, rgb_image(64, 64), photometric="rgb", metadata=None, **layout)
    set_tiff_tag(path, "ImageWidth", width)
    set_tiff_tag(path, "ImageLength", height)
    if strips:
        set_tiff_tag(path, "RowsPerStrip", height)


@pytest.mark.parametrize(
    ("build", "name", "size", "message"),
    [
        (png, "huge.png", (10**6, 10**6), "more than the 200000 px per side"),
        (png, "line.png", (2**31 - 1, 1), "more than the 200000 px per side"),
        (png, "big.png", (30000, 30000), "decoding the whole PNG at once"),
        (jpeg, "big.jpg", (65000, 65000), "decoding the whole JPEG at once"),
        (tiff, "huge.tif", (10**6, 10**6), "more than the 200000 px per side"),
        (lambda p, w, h: tiff(p, w, h, strips=True), "strip.tif", (30000, 30000), "one tile"),
    ],
)
def test_sizes_claimed_by_headers_are_refused_before_decoding(tmp_path, build, name, size, message):
    path = tmp_path / name
    build(path, *size)
    assert path.stat().st_size < 100_000
    with pytest.raises(SlideError, match=message) as error:
        open_slide(path)
    assert "\n" not in str(error.value)


def test_ceilings_can_be_raised_or_lowered_by_environment(tmp_path, monkeypatch):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, rgb_image(64, 80), photometric="rgb")
    monkeypatch.setenv("VSTAIN_MAX_SIDE", "70")
    with pytest.raises(SlideError, match="80 x 64 px at level 0, more than the 70 px"):
        open_slide(path)
    monkeypatch.setenv("VSTAIN_MAX_SIDE", "80")
    assert open_slide(path).shape == (64, 80)
    monkeypatch.setenv("VSTAIN_MAX_DECODE_PIXELS", "1000")
    with pytest.raises(SlideError, match="raise VSTAIN_MAX_DECODE_PIXELS"):
        open_slide(path)
    monkeypatch.setenv("VSTAIN_MAX_DECODE_PIXELS", "many")
    with pytest.raises(VstainError, match="VSTAIN_MAX_DECODE_PIXELS must be a positive integer"):
        open_slide(path)


@pytest.fixture
def svs(tmp_path):
    """An SVS whose page IFDs follow their tile data, as scanners write them."""
    path = tmp_path / "s.svs"
    image = rgb_image(256, 320)
    write_svs(path, [image, image[::2, ::2]], tile=64)
    return path


def _cut_inside_ifd(path, page):
    with tifffile.TiffFile(path) as tif:
        cut = tif.pages[page].offset + 30
    path.write_bytes(path.read_bytes()[:cut])


def _first_ifd_past_the_end(path):
    """As a scanner's SVS truncated before its first IFD, which it writes after the tiles."""
    data = bytearray(path.read_bytes())
    data[4:8] = (len(data) + 1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [*(functools.partial(_cut_inside_ifd, page=k) for k in range(3)), _first_ifd_past_the_end],
    ids=["ifd0", "ifd1", "ifd2", "ifd-past-end"],
)
def test_truncated_svs_is_a_one_line_error_without_log_noise(svs, damage, capfd):
    damage(svs)
    with pytest.raises(SlideError, match="corrupt") as error:
        open_slide(svs)
    assert "\n" not in str(error.value) and "empty image" not in str(error.value)
    assert capfd.readouterr().err == ""


def test_truncated_jpeg_is_refused_when_read_instead_of_reading_grey(tmp_path):
    path = tmp_path / "cut.jpg"
    data = imagecodecs.jpeg8_encode(rgb_image(64, 64))
    path.write_bytes(data[: len(data) * 3 // 4])
    slide = open_slide(path)
    with pytest.raises(SlideError, match="truncated JPEG"):
        slide.read_region(0, 0, 8, 8)


@pytest.fixture
def ngff(tmp_path):
    path = tmp_path / "image.zarr"
    image = np.moveaxis(rgb_image(128, 96), -1, 0)
    write_ngff(path, [image, image[:, ::2, ::2]], axes("cyx"), [1.0, 0.5, 0.5], chunk=32)
    return path


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _multiscale(data):
    return data["attributes"]["ome"]["multiscales"][0]


def _set_level0_shape(root, side):
    _edit_json(root / "0" / "zarr.json", lambda d: d.update(shape=[3, side, side]))


NGFF_DAMAGE = {
    "level zarr.json is not JSON": (
        lambda root: (root / "1" / "zarr.json").write_text("{garbage"),
        "level '1' cannot be opened",
    ),
    "level folder missing": (lambda root: shutil.rmtree(root / "1"), "level '1' cannot be opened"),
    "no datasets": (
        lambda root: _edit_json(root / "zarr.json", lambda d: _multiscale(d).update(datasets=[])),
        "'datasets' must list at least one level",
    ),
    "scale of the wrong length": (
        lambda root: _edit_json(
            root / "zarr.json",
            lambda d: _multiscale(d)["datasets"][0]["coordinateTransformations"][0].update(
                scale=[1, 2]
            ),
        ),
        "does not have one entry per axis",
    ),
    "negative scale": (
        lambda root: _edit_json(
            root / "zarr.json",
            lambda d: _multiscale(d)["datasets"][1]["coordinateTransformations"][0].update(
                scale=[1, -1, "x"]
            ),
        ),
        "a scale must be a list of positive numbers",
    ),
    "transforms not a list": (
        lambda root: _edit_json(
            root / "zarr.json",
            lambda d: _multiscale(d)["datasets"][0].update(coordinateTransformations=7),
        ),
        "'coordinateTransformations' must be a list",
    ),
    "axes not named": (
        lambda root: _edit_json(root / "zarr.json", lambda d: _multiscale(d).update(axes=[1, 2])),
        "'axes' must be a list of names",
    ),
    "group zarr.json is not JSON": (
        lambda root: (root / "zarr.json").write_bytes(b"\xff\xfe{"),
        "is not a zarr group",
    ),
    "level 0 claims 10^6 px over its level 1": (
        lambda root: _set_level0_shape(root, 10**6),
        "more than the 200000 px per side",
    ),
    "level 0 claims 10^12 px": (
        lambda root: _set_level0_shape(root, 10**12),
        "more than the 200000 px per side",
    ),
    "level 0 claims 100000 px over its level 1": (
        lambda root: _set_level0_shape(root, 100_000),
        "levels disagree with their scales",
    ),
}


@pytest.mark.parametrize("damage", NGFF_DAMAGE)
def test_damaged_ngff_metadata_is_a_one_line_error(ngff, damage):
    edit, message = NGFF_DAMAGE[damage]
    edit(ngff)
    with pytest.raises(SlideError, match=message) as error:
        open_slide(ngff)
    assert "\n" not in str(error.value)


def test_json_depth_is_checked_before_parsing():
    deep = "[" * 100_000 + "]" * 100_000
    assert json_depth(deep) == 100_000
    assert json_depth('{"a": "[[[[[", "b": [[1]]}') == 3  # brackets inside strings do not count
    with pytest.raises(ValueError, match="nested 100000 levels deep"):
        loads_bounded(deep)
    assert loads_bounded('{"a": [[1, 2]]}') == {"a": [[1, 2]]}
