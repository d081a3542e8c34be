import functools

import numpy as np
import pytest
import torch

from tests.io.builders import write_ome_tiff_subifds
from vstain.errors import RegionError, SlideError
from vstain.io import open_slide
from vstain.train.regions import (
    PairedRegions,
    Region,
    RegionCrops,
    RegionGrid,
    region_datasets,
    split_regions,
)

SIZE = 256
CROP = 16


def coordinates_image(invert: bool = False) -> np.ndarray:
    """R = x, G = y, so every crop tells where it came from; the IHC is the inverse image."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    return 255 - image if invert else image


@pytest.fixture
def slides(tmp_path):
    paths = []
    for name, invert in (("he", False), ("ihc", True)):
        level0 = coordinates_image(invert)
        write_ome_tiff_subifds(tmp_path / f"{name}.ome.tif", [level0, level0[::2, ::2]], 0.5)
        paths.append(open_slide(tmp_path / f"{name}.ome.tif"))
    return paths


def corner(item) -> tuple[int, int]:
    he = (item["he"] * 255).round().to(torch.uint8).numpy()
    return int(he[0, 0, 0]), int(he[1, 0, 0])


RECTS = [Region(10, 20, 40, 30), Region(100, 120, 64, 100), Region(200, 10, 40, 40, True)]


def test_crops_lie_inside_the_training_rectangles_and_pairs_align(slides):
    he, ihc = slides
    train, val = region_datasets(he, ihc, RECTS, CROP, seed=3)
    assert len(train) == (2 * 1) + (4 * 6)  # non-overlapping crops that fit
    used = set()
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            item = train[i]
            assert item["he"].shape == item["ihc"].shape == (3, CROP, CROP)
            assert torch.allclose(item["ihc"], 1 - item["he"])  # the IHC of the same place
            x, y = corner(item)
            inside = [
                r.x <= x and x + CROP <= r.x + r.w and r.y <= y and y + CROP <= r.y + r.h
                for r in RECTS[:2]
            ]
            assert any(inside), (x, y)
            used.add(inside.index(True))
    assert used == {0, 1}
    assert val is not None and all(
        200 <= corner(it)[0] <= 240 - CROP and 10 <= corner(it)[1] <= 50 - CROP for it in val
    )


def test_crops_are_deterministic_from_seed_epoch_and_index(slides):
    he, ihc = slides
    source = PairedRegions(he, ihc, RECTS[:2], CROP)
    a, b = RegionCrops(source, seed=1), RegionCrops(source, seed=1)
    assert [a.corner(i) for i in range(10)] == [b.corner(i) for i in range(10)]
    b.set_epoch(1)
    assert [a.corner(i) for i in range(10)] != [b.corner(i) for i in range(10)]
    assert [a.corner(i) for i in range(10)] != [
        RegionCrops(source, seed=2).corner(i) for i in range(10)
    ]
    assert len(RegionCrops(source, length=5)) == 5


def test_validation_grid_is_fixed_and_covers_each_region(slides):
    he, ihc = slides
    grid = RegionGrid(PairedRegions(he, ihc, [Region(30, 40, 40, 20)], CROP))
    corners = [corner(item) for item in grid]
    assert corners == [corner(item) for item in grid]  # fixed
    assert len(corners) == 3 * 2  # ceil(40 / 16) x ceil(20 / 16), last ones shifted inward
    covered = np.zeros((SIZE, SIZE), bool)
    for x, y in corners:
        assert 30 <= x <= 70 - CROP and 40 <= y <= 60 - CROP
        covered[y : y + CROP, x : x + CROP] = True
    assert covered[40:60, 30:70].all() and covered.sum() == 40 * 20


def test_split_by_flags_or_by_fraction():
    flagged = split_regions(RECTS, val_fraction=0.5)
    assert flagged == (RECTS[:2], RECTS[2:])  # flags decide, the fraction is not used
    plain = [Region(i * 10, 0, 5, 5) for i in range(10)]
    train, val = split_regions(plain, val_fraction=0.3, seed=0)
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    assert split_regions(plain, val_fraction=0.3, seed=0) == (train, val)
    assert split_regions(plain[:2], val_fraction=0.1)[1] != []  # at least one when asked
    assert split_regions(plain) == (plain, [])
    with pytest.raises(RegionError, match="remain for training"):
        split_regions([Region(0, 0, 5, 5, True)])


def test_crops_at_a_coarser_level_stay_inside(slides):
    he, ihc = slides
    source = PairedRegions(he, ihc, [Region(11, 21, 80, 60)], CROP, level=1)
    assert source.boxes == [(6, 11, 45, 40)]  # level-1 pixels wholly inside the rectangle
    crops = RegionCrops(source, seed=0, length=20)
    for i in range(len(crops)):
        x, y = corner(crops[i])  # level-1 images hold level-0 coordinates (even numbers)
        assert x >= 11 and x + 2 * CROP <= 91 and y >= 21 and y + 2 * CROP <= 81


def test_bad_regions_and_slides_are_clear_errors(slides, tmp_path):
    he, ihc = slides
    with pytest.raises(RegionError, match="smaller than the crop of 16 px"):
        PairedRegions(he, ihc, [Region(0, 0, 15, 40)], CROP)
    with pytest.raises(RegionError, match=r"not inside he\.ome\.tif"):
        PairedRegions(he, ihc, [Region(250, 0, 20, 20)], CROP)
    with pytest.raises(RegionError, match="at least one rectangle"):
        PairedRegions(he, ihc, [], CROP)
    small = coordinates_image()[:128]
    write_ome_tiff_subifds(tmp_path / "small.ome.tif", [small], 0.5)
    with pytest.raises(SlideError, match="register it first"):
        PairedRegions(he, open_slide(tmp_path / "small.ome.tif"), RECTS, CROP)


def test_any_reader_can_give_the_ihc(slides):
    he, ihc = slides
    calls = []

    def shifted(slide, x, y, w, h, level):
        calls.append((x, y, w, h, level))
        return slide.read_region(x + 1, y, w, h, level)

    source = PairedRegions(he, functools.partial(shifted, ihc), [Region(0, 0, 32, 32)], CROP)
    item = source.item(4, 5)
    assert calls == [(4, 5, CROP, CROP, 0)]
    assert torch.allclose(item["ihc"][:, :, :-1], 1 - item["he"][:, :, 1:])
    bad = PairedRegions(he, lambda *args: np.zeros((3, 3, 3), np.uint8), RECTS[:1], CROP)
    with pytest.raises(SlideError, match=r"\(h, w, 3\) uint8"):
        bad.item(10, 20)


def test_augmented_crops_turn_both_images_alike_and_perturb_only_the_he(slides):
    he, ihc = slides
    source = PairedRegions(he, ihc, RECTS[:2], CROP)
    plain, augmented = RegionCrops(source, seed=4), RegionCrops(source, seed=4, augment=True)
    assert [plain.corner(i) for i in range(8)] == [augmented.corner(i) for i in range(8)]
    geometries = set()
    for i in range(8):
        a, p = augmented[i], plain[i]
        turned = [
            torch.rot90(p["ihc"], k, dims=(1, 2)).flip(2)
            if flip
            else torch.rot90(p["ihc"], k, (1, 2))
            for flip in (False, True)
            for k in range(4)
        ]
        matches = [k for k, t in enumerate(turned) if torch.equal(t, a["ihc"])]
        assert len(matches) == 1  # the IHC is only turned / flipped
        geometries.add(matches[0])
        assert not torch.allclose(a["he"], 1 - a["ihc"], atol=1 / 255)  # H&E stains perturbed
    assert len(geometries) > 1
