import numpy as np
import pytest
from skimage.draw import disk

from vstain.color import (
    HED,
    DabStats,
    StainError,
    coarse_dab_mask,
    concentrations_to_rgb,
    dab_od,
    dab_threshold_stats,
    rgb_to_concentrations,
    signed_distance,
)


def dab_image(dab: np.ndarray, hema: float = 0.1) -> np.ndarray:
    """RGB of a DAB map over uniform hematoxylin ``hema`` (OD units)."""
    conc = np.stack([np.full_like(dab, hema), np.zeros_like(dab), dab], axis=-1)
    return concentrations_to_rgb(conc, HED)


def test_mask_of_real_ihc_covers_brown_membranes_not_blue_nuclei(ihc_image):
    mask = coarse_dab_mask(ihc_image)
    conc = rgb_to_concentrations(ihc_image)
    hema, dab = conc[..., 0], conc[..., 2]
    fraction = mask.mean()
    print(f"coarse DAB mask covers {100 * fraction:.2f} % of skimage's IHC image")
    assert mask.dtype == bool and mask.shape == ihc_image.shape[:2]
    # Hand-checked overlay: only the darkest brown membranes pass mean + 2 std (about 2-3 %).
    assert 0.01 < fraction < 0.06
    assert np.median(dab[mask]) > 0.9 > np.median(dab[~mask])
    blue = (hema > dab) & (dab < 0.2)
    assert blue.mean() > 0.2  # the image has plenty of hematoxylin-only pixels...
    assert (mask & blue).sum() / blue.sum() < 0.002  # ...and the mask almost never touches them


def test_threshold_is_mean_plus_k_std(ihc_image):
    stats = dab_threshold_stats(ihc_image, max_pixels=None)
    dab = dab_od(ihc_image)
    assert stats.mean == pytest.approx(dab.mean(), rel=1e-4)
    assert stats.std == pytest.approx(dab.std(), rel=1e-4)
    raw = coarse_dab_mask(ihc_image, k=1.0, min_size=1, max_hole=0)
    np.testing.assert_array_equal(raw, dab > stats.mean + stats.std)


def test_slide_statistics_apply_to_a_tile(ihc_image):
    stats = dab_threshold_stats(ihc_image)
    crop = np.s_[380:508, 380:508]  # stroma: hardly any DAB
    raw = {"min_size": 1, "max_hole": 0}
    shared = coarse_dab_mask(ihc_image[crop], stats=stats, **raw)
    np.testing.assert_array_equal(shared, coarse_dab_mask(ihc_image, stats=stats, **raw)[crop])
    # The tile's own mean + 2 std is low, so faint background passes; the slide's is not fooled.
    own = coarse_dab_mask(ihc_image[crop], **raw)
    assert shared.sum() < 20 < 200 < own.sum()


def test_tissue_mask_sets_statistics_and_restricts_result():
    dab = np.full((64, 64), 0.1, np.float32)
    dab[:, :32] = 0.8  # not tissue: a dark mark outside the tissue mask
    dab[40:50, 40:50] = 0.5
    rgb = dab_image(dab)
    tissue = np.zeros((64, 64), bool)
    tissue[:, 32:] = True
    square = np.zeros((64, 64), bool)
    square[40:50, 40:50] = True
    np.testing.assert_array_equal(coarse_dab_mask(rgb, mask=tissue, k=1.0), square)
    # Statistics over the whole image are dominated by the mark: the square is missed.
    assert not coarse_dab_mask(rgb, k=1.0)[square].any()


def test_small_objects_removed_and_small_holes_filled():
    dab = np.zeros((80, 80), np.float32)
    dab[5:7, 5:7] = 1.0  # 4 px speck
    ring = np.zeros((80, 80), bool)
    ring[disk((40, 40), 15)] = True
    ring[disk((40, 40), 3)] = False  # 29 px hole
    dab[ring] = 1.0
    mask = coarse_dab_mask(dab_image(dab), stats=DabStats(0.0, 0.25), min_size=16, max_hole=64)
    assert not mask[5:7, 5:7].any()
    assert mask[40, 40]
    kept_hole = coarse_dab_mask(dab_image(dab), stats=DabStats(0.0, 0.25), max_hole=20)
    assert not kept_hole[40, 40]


def test_split_separates_two_touching_cells():
    cells = np.zeros((60, 90), bool)
    cells[disk((30, 30), 14)] = True
    cells[disk((30, 55), 14)] = True
    rgb = dab_image(np.where(cells, 1.0, 0.0).astype(np.float32))
    labels = coarse_dab_mask(rgb, stats=DabStats(0.0, 0.25), split=True)
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[30, 25] != labels[30, 60]
    np.testing.assert_array_equal(labels > 0, cells)


def test_empty_tissue_mask_is_an_error(ihc_image):
    with pytest.raises(StainError, match="selects no pixels"):
        coarse_dab_mask(ihc_image, mask=np.zeros(ihc_image.shape[:2], bool))


def test_signed_distance_sign_clip_and_scale():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    sd = signed_distance(mask, clip=4.0)
    assert sd.dtype == np.float32 and sd.shape == mask.shape
    assert (sd[mask] > 0).all() and (sd[~mask] < 0).all()
    assert sd[10, 20] == pytest.approx(1 / 4)  # inside boundary pixel: 1 px
    assert sd[9, 20] == pytest.approx(-1 / 4)  # outside neighbour: -1 px
    assert sd[12, 20] == pytest.approx(3 / 4)
    assert sd[20, 20] == 1.0 and sd[0, 0] == -1.0  # clipped
    assert np.all(signed_distance(np.zeros((5, 5)), 4.0) == -1)
    assert np.all(signed_distance(np.ones((5, 5)), 4.0) == 1)
    with pytest.raises(StainError, match="clip"):
        signed_distance(mask, clip=0)
