"""`downsample_2x`: values, rounding, odd edges, layouts; tile-by-tile equals whole-image."""

import numpy as np
import pytest
import zarr

from tests.io.builders import rgb_image
from vstain.io import downsample_2x
from vstain.io.pyramid import fill_downsampled, pyramid_shapes


def test_mean_rounds_half_up_and_odd_edges_average_existing_pixels():
    plane = np.array([[0, 1, 10, 20, 7], [0, 1, 30, 41, 8], [5, 6, 100, 200, 9]], np.uint8)
    expected = np.array(
        [
            [1, 25, 8],  # (0+1+0+1)/4 = 0.5 -> 1; (10+20+30+41)/4 = 25.25 -> 25
            [6, 150, 9],
        ],  # last row: (5+6)/2 = 5.5 -> 6; corner: 9
        np.uint8,
    )
    out = downsample_2x(plane[None])
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out[0], expected)


def test_channel_last_layout_matches_channel_first():
    image = rgb_image(37, 51)
    first = downsample_2x(np.moveaxis(image, -1, 0))
    last = downsample_2x(image, channel_axis=-1)
    assert last.shape == (19, 26, 3)
    np.testing.assert_array_equal(np.moveaxis(first, 0, -1), last)


def test_float_mean_keeps_dtype_and_nan_marks_incomplete_blocks():
    block = np.array([[[0.0, 1.0, np.nan, 2.0], [1.0, 2.0, 4.0, 2.0]]], np.float32)
    out = downsample_2x(block)
    assert out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(1.0)
    assert np.isnan(out[0, 0, 1])


def test_uint16_and_extreme_values_do_not_overflow():
    assert downsample_2x(np.full((1, 2, 2), 255, np.uint8))[0, 0, 0] == 255
    assert downsample_2x(np.full((1, 2, 2), 65535, np.uint16))[0, 0, 0] == 65535


def test_tile_by_tile_pyramid_equals_whole_image(tmp_path):
    image = np.moveaxis(rgb_image(301, 243), -1, 0)
    group = zarr.open_group(tmp_path / "p.zarr", mode="w")
    source = group.create_array("0", data=image, chunks=(3, 64, 64))
    target = group.create_array("1", shape=(3, 151, 122), chunks=(3, 64, 64), dtype="uint8")
    calls = []
    fill_downsampled(source, target, lambda: calls.append(1))
    np.testing.assert_array_equal(target[:], downsample_2x(image))
    assert len(calls) == 3 * 2


def test_pyramid_shapes():
    assert pyramid_shapes((1000, 600), 256) == [(1000, 600), (500, 300), (250, 150)]
    assert pyramid_shapes((100, 50), 256) == [(100, 50)]
    assert pyramid_shapes((5, 3), 256, n_levels=4) == [(5, 3), (3, 2), (2, 1), (1, 1)]
