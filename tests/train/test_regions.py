import dask.array as da
import numpy as np
import pytest

from vstain.errors import RegionError
from vstain.io.slide import Slide
from vstain.train.regions import Region, RegionCrops, split_regions


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    he = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    ihc = 255 - he
    return (
        Slide(tmp_path / "he.tif", [da.from_array(he, chunks=64)], 0.5),
        Slide(tmp_path / "ihc.tif", [da.from_array(ihc, chunks=64)], 0.5),
        he,
    )


def test_crops_lie_inside_regions_and_pair_up(pair):
    he_slide, ihc_slide, he = pair
    regions = [Region(10, 20, 80, 70), Region(200, 100, 150, 150)]
    crops = RegionCrops(he_slide, ihc_slide, regions, 32, length=200, seed=1)
    for i in range(len(crops)):
        x, y = crops.origin(i)
        assert any(
            r.x <= x and x + 32 <= r.x + r.w and r.y <= y and y + 32 <= r.y + r.h for r in regions
        )
    item = crops[5]
    x, y = crops.origin(5)
    np.testing.assert_allclose(
        item["he"].numpy(), he[y : y + 32, x : x + 32].transpose(2, 0, 1) / 255
    )
    np.testing.assert_allclose(item["ihc"].numpy(), 1 - item["he"].numpy(), atol=1e-6)
    assert crops.origin(5) == RegionCrops(he_slide, ihc_slide, regions, 32, seed=1).origin(5)


def test_split_and_fixed_validation_grid(pair):
    he_slide, ihc_slide, _ = pair
    train, val = split_regions([Region(0, 0, 100, 100), Region(200, 0, 64, 96, validation=True)])
    assert len(train) == 1 and val[0].validation
    grid = RegionCrops(he_slide, ihc_slide, val, 32, fixed=True)
    assert len(grid) == 2 * 3
    assert [grid.origin(i) for i in range(2)] == [(200, 0), (232, 0)]
    with pytest.raises(RegionError, match="at least one region for training"):
        split_regions([Region(0, 0, 50, 50, validation=True)])


def test_bad_regions_are_clear_errors(pair):
    he_slide, ihc_slide, _ = pair
    with pytest.raises(RegionError, match="smaller than the 64 px crop"):
        RegionCrops(he_slide, ihc_slide, [Region(0, 0, 50, 50)], 64)
    with pytest.raises(RegionError, match="outside the slide"):
        RegionCrops(he_slide, ihc_slide, [Region(380, 0, 50, 50)], 32)
