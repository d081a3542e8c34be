"""`open_slide` dispatch and the errors every format shares."""

import numpy as np
import pytest
import tifffile

from tests.io.builders import rgb_image
from vstain.errors import RegionError, SlideError
from vstain.io import open_slide


def test_missing_path(tmp_path):
    with pytest.raises(SlideError, match=r"nothere\.svs does not exist"):
        open_slide(tmp_path / "nothere.svs")


def test_empty_file(tmp_path):
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(SlideError, match=r"empty\.svs is empty \(0 bytes\)"):
        open_slide(tmp_path / "empty.svs")


@pytest.mark.parametrize(
    ("name", "data"), [("notes.txt", b"hello slide"), ("image.bmp", b"BM" + b"\x00" * 60)]
)
def test_unsupported_format_names_the_supported_ones(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(
        SlideError, match=name.replace(".", r"\.") + " is not a slide format.*OME-Zarr"
    ):
        open_slide(tmp_path / name)


def test_format_comes_from_content_not_extension(tmp_path):
    path = tmp_path / "really_a_tiff.png"
    tifffile.imwrite(path, rgb_image(30, 40), photometric="rgb")
    slide = open_slide(str(path))
    assert slide.metadata["format"] != "png"
    assert slide.path == path
    assert slide.shape == (30, 40)


def test_zero_pixel_tiff(tmp_path):
    path = tmp_path / "zero.tif"
    with pytest.warns(UserWarning, match="zero-size"):
        tifffile.imwrite(path, np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(SlideError, match=r"zero\.tif has no pixels"):
        open_slide(path)


def test_read_region_outside_is_a_region_error(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, rgb_image(30, 40), photometric="rgb")
    with pytest.raises(RegionError):
        open_slide(path).read_region(30, 0, 20, 10)
