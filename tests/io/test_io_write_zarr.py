"""OME-Zarr writing: `create_ome_zarr` metadata, `write_ome_zarr` round trips and bounded memory."""

import json

import numpy as np
import pytest

from tests.io.builders import (
    assert_levels_are_pyramid_of,
    lazy_pattern,
    pattern,
    peak_memory,
    rgb_image,
    write_svs,
)
from vstain.errors import OutputExistsError, SlideError
from vstain.io import (
    create_ome_zarr,
    downsample_2x,
    open_ome_zarr_levels,
    open_slide,
    write_ome_zarr,
)


def test_create_ome_zarr_layout_and_metadata(tmp_path):
    path = tmp_path / "ihc.zarr"
    arrays = create_ome_zarr(
        path,
        (1000, 600),
        4,
        np.uint8,
        chunk=128,
        pixel_size=0.5,
        name="ihc",
        channel_names=["R", "G", "B", "A"],
    )

    assert [a.shape for a in arrays] == [(4, 1000, 600), (4, 500, 300), (4, 250, 150)]
    assert all(a.chunks == (4, 128, 128) for a in arrays)
    assert all(a.metadata.dimension_names == ("c", "y", "x") for a in arrays)
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert attrs["version"] == "0.5"
    multiscale = attrs["multiscales"][0]
    assert multiscale["name"] == "ihc"
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert multiscale["axes"][2]["unit"] == "micrometer"
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1, 0.5, 0.5], [1, 1.0, 1.0], [1, 2.0, 2.0]]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["R", "G", "B", "A"]
    assert [a.path for a in open_ome_zarr_levels(path)] == ["0", "1", "2"]


def test_create_without_pixel_size_is_unitless_and_n_levels_is_respected(tmp_path):
    path = tmp_path / "u.zarr"
    arrays = create_ome_zarr(
        path, (100, 60), 1, np.float32, chunk=32, n_levels=3, fill_value=np.nan
    )
    multiscale = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert all("unit" not in axis for axis in multiscale["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[1, 1, 1], [1, 2, 2], [1, 4, 4]]
    assert [a.shape for a in arrays] == [(1, 100, 60), (1, 50, 30), (1, 25, 15)]
    assert np.isnan(arrays[2][:]).all()


def test_default_levels_go_down_to_256_px(tmp_path):
    arrays = create_ome_zarr(tmp_path / "big.zarr", (3000, 700), 3, np.uint8)
    assert [a.shape[1:] for a in arrays][-2:] == [(375, 88), (188, 44)]
    assert len(create_ome_zarr(tmp_path / "small.zarr", (200, 256), 3, np.uint8)) == 1


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "x.zarr"
    create_ome_zarr(path, (600, 600), 3, np.uint8, chunk=64)
    with pytest.raises(OutputExistsError, match=r"x\.zarr exists.*overwrite"):
        create_ome_zarr(path, (10, 10), 3, np.uint8)
    create_ome_zarr(path, (10, 10), 3, np.uint8, overwrite=True)
    assert [a.shape for a in open_ome_zarr_levels(path)] == [(3, 10, 10)]
    assert not (path / "1").exists()


def test_open_levels_for_writing(tmp_path):
    path = tmp_path / "w.zarr"
    create_ome_zarr(path, (64, 64), 3, np.uint8, chunk=32)
    open_ome_zarr_levels(path, mode="r+")[0][:, :32, :32] = 9
    assert open_ome_zarr_levels(path)[0][:].sum() == 9 * 3 * 32 * 32


def test_write_one_array_computes_levels_tile_by_tile(tmp_path):
    image = rgb_image(700, 900)
    calls = []
    write_ome_zarr(
        image,
        tmp_path / "one.zarr",
        chunk=128,
        pixel_size=0.25,
        progress=lambda done, total: calls.append((done, total)),
    )

    slide = open_slide(tmp_path / "one.zarr")

    assert slide.pixel_size == pytest.approx(0.25)
    assert_levels_are_pyramid_of(slide, image, 3)
    total = 6 * 8 + 3 * 4 + 2 * 2
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_write_slide_keeps_its_levels_and_pixel_size(tmp_path):
    levels = [rgb_image(640, 520), rgb_image(160, 130, 1)]
    write_svs(tmp_path / "s.svs", levels, tile=64)
    source = open_slide(tmp_path / "s.svs")

    write_ome_zarr(source, tmp_path / "s.zarr", chunk=64)
    copy = open_slide(tmp_path / "s.zarr")

    assert copy.pixel_size == pytest.approx(0.252)
    assert len(copy.levels) == 2
    for ours, exp in zip(copy.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), exp)
    multiscale = open_ome_zarr_levels(tmp_path / "s.zarr")[0]
    assert multiscale.metadata.dimension_names == ("c", "y", "x")


def test_write_refuses_non_rgb_uint8_levels(tmp_path):
    with pytest.raises(SlideError, match=r"\(Y, X, 3\) uint8"):
        write_ome_zarr(np.zeros((10, 10, 3), np.float32), tmp_path / "f.zarr")
    with pytest.raises(SlideError, match="larger than level 0"):
        write_ome_zarr(
            [np.zeros((10, 10, 3), np.uint8), np.zeros((20, 10, 3), np.uint8)], tmp_path / "g.zarr"
        )


def test_writing_a_lazy_image_keeps_memory_bounded(tmp_path):
    """Peak traced memory does not grow with the image: writing a 3072 px square lazy image
    (27 MiB of pixels) peaks within 4 MiB of writing a 1536 px one (6.75 MiB), and below half
    the image size; every level is right."""
    peaks = {
        size: peak_memory(
            write_ome_zarr, lazy_pattern(size, size), tmp_path / f"{size}.zarr", chunk=256
        )
        for size in (1536, 3072)
    }
    assert peaks[3072] < peaks[1536] + 4 * 2**20
    assert peaks[3072] < 3072 * 3072 * 3 / 2

    slide = open_slide(tmp_path / "3072.zarr")
    assert [lvl.shape[0] for lvl in slide.levels] == [3072, 1536, 768, 384, 192]
    expected = pattern(3072, 3072)
    np.testing.assert_array_equal(slide.levels[0].compute(), expected)
    for level in slide.levels[1:]:
        expected = downsample_2x(expected, channel_axis=-1)
        np.testing.assert_array_equal(level.compute(), expected)
