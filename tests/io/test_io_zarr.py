"""Reading OME-Zarr slides: NGFF 0.5 and 0.4, axis orders, engine output stores, bad stores."""

import numpy as np
import pytest
import zarr

from tests.io.builders import axes, rgb_image, write_ngff
from vstain.errors import SlideError
from vstain.io import create_ome_zarr, downsample_2x, open_slide


def _pyramid(image: np.ndarray, n: int) -> list[np.ndarray]:
    levels = [image]
    for _ in range(n - 1):
        levels.append(downsample_2x(levels[-1], channel_axis=-1))
    return levels


def test_ngff_05_cyx(tmp_path):
    levels = _pyramid(rgb_image(200, 150), 3)
    path = tmp_path / "image.zarr"
    write_ngff(path, [np.moveaxis(lvl, -1, 0) for lvl in levels], axes("cyx"), [1, 0.5, 0.5])

    slide = open_slide(path)

    assert slide.metadata["format"] == "ome-zarr"
    assert slide.metadata["ngff_version"] == "0.5"
    assert slide.pixel_size == pytest.approx(0.5)
    assert [lvl.shape for lvl in slide.levels] == [lvl.shape for lvl in levels]
    assert slide.levels[0].chunksize == (64, 64, 3)
    for ours, expected in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), expected)


def test_ngff_04_on_zarr_v2_yxc_in_nanometres(tmp_path):
    levels = _pyramid(rgb_image(130, 170), 2)
    path = tmp_path / "v2.zarr"
    write_ngff(path, levels, axes("yxc", "nanometer"), [250, 250, 1], zarr_format=2, chunk=32)
    assert (path / ".zattrs").exists()

    slide = open_slide(path)

    assert slide.metadata["ngff_version"] == "0.4"
    assert slide.pixel_size == pytest.approx(0.25)
    assert slide.levels[0].chunksize == (32, 32, 3)
    np.testing.assert_array_equal(slide.read_region(5, 7, 40, 30, level=1), levels[1][7:37, 5:45])


def test_length_one_t_and_z_axes_are_dropped(tmp_path):
    image = rgb_image(50, 60)
    path = tmp_path / "tczyx.zarr"
    write_ngff(path, [np.moveaxis(image, -1, 0)[None, :, None]], axes("tczyx"), [1, 1, 1, 0.3, 0.3])
    slide = open_slide(path)
    np.testing.assert_array_equal(slide.levels[0].compute(), image)
    assert slide.pixel_size == pytest.approx(0.3)


def test_several_z_planes_are_refused(tmp_path):
    path = tmp_path / "zstack.zarr"
    write_ngff(path, [np.zeros((3, 2, 20, 20), np.uint8)], axes("czyx"), [1, 1, 1, 1])
    with pytest.raises(SlideError, match="2 planes along axis 'z'"):
        open_slide(path)


def test_missing_unit_means_unknown_pixel_size(tmp_path):
    path = tmp_path / "nounit.zarr"
    write_ngff(path, [np.zeros((3, 20, 20), np.uint8)], axes("cyx", None), [1, 0.5, 0.5])
    slide = open_slide(path)
    assert slide.pixel_size is None
    assert "no unit" in slide.metadata["pixel_size_source"]


def test_float_pixels_in_unit_range_are_scaled_and_others_refused_when_read(tmp_path):
    values = np.linspace(0, 1, 20 * 20 * 3, dtype=np.float32).reshape(3, 20, 20)
    path = tmp_path / "float.zarr"
    write_ngff(path, [values], axes("cyx"), [1, 1, 1])
    out = open_slide(path).levels[0].compute()
    np.testing.assert_array_equal(out, np.rint(np.moveaxis(values, 0, -1) * 255).astype(np.uint8))

    bad = tmp_path / "bad_float.zarr"
    write_ngff(bad, [values * 2], axes("cyx"), [1, 1, 1])
    with pytest.raises(SlideError, match=r"bad_float\.zarr holds floating-point pixels outside"):
        open_slide(bad).read_region(0, 0, 20, 20)


def test_engine_store_opens_ihc_and_drops_alpha(tmp_path):
    """An engine output store: root group with RGBA "ihc" (alpha = computed mask) and a float
    "uncertainty" image; the root path opens "ihc"."""
    root = tmp_path / "out.zarr"
    zarr.open_group(root, mode="w")
    ihc = create_ome_zarr(root / "ihc", (100, 80), 4, np.uint8, chunk=32, pixel_size=0.5)
    create_ome_zarr(root / "uncertainty", (100, 80), 1, np.float32, chunk=32, fill_value=np.nan)
    rgba = np.moveaxis(np.dstack([rgb_image(100, 80), np.full((100, 80), 255, np.uint8)]), -1, 0)
    ihc[0][:] = rgba

    for path in (root, root / "ihc"):
        slide = open_slide(path)
        assert slide.path == root / "ihc"
        assert slide.pixel_size == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.levels[0].compute(), np.moveaxis(rgba[:3], 0, -1))
    with pytest.raises(SlideError, match="grayscale"):
        open_slide(root / "uncertainty")


def test_group_of_images_without_ihc_lists_them(tmp_path):
    root = tmp_path / "many.zarr"
    zarr.open_group(root, mode="w")
    for name in ("he", "mask"):
        create_ome_zarr(root / name, (20, 20), 3, np.uint8)
    with pytest.raises(SlideError, match=r"several images \(he, mask\).*many\.zarr/he"):
        open_slide(root)


def test_zarr_group_without_images_is_refused(tmp_path):
    root = tmp_path / "empty.zarr"
    zarr.open_group(root, mode="w").create_array("a", shape=(3, 4, 4), dtype="uint8")
    with pytest.raises(SlideError, match=r"empty\.zarr is a zarr group without OME-NGFF"):
        open_slide(root)


def test_folder_that_is_not_zarr_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(SlideError, match=r"folder is not a zarr group"):
        open_slide(tmp_path / "folder")


def test_zero_pixel_image_is_refused(tmp_path):
    path = tmp_path / "zero.zarr"
    write_ngff(path, [np.zeros((3, 0, 0), np.uint8)], axes("cyx"), [1, 1, 1])
    with pytest.raises(SlideError, match=r"zero\.zarr has no pixels"):
        open_slide(path)


def test_corrupt_chunk_is_reported_when_read(tmp_path):
    path = tmp_path / "corrupt.zarr"
    write_ngff(path, [np.moveaxis(rgb_image(128, 128), -1, 0)], axes("cyx"), [1, 1, 1])
    (path / "0" / "c" / "0" / "1" / "1").write_bytes(b"not a zstd frame")
    slide = open_slide(path)
    assert slide.read_region(0, 0, 64, 64).shape == (64, 64, 3)
    with pytest.raises(SlideError, match=r"Cannot decode pixels of .*corrupt\.zarr"):
        slide.read_region(64, 64, 10, 10)
