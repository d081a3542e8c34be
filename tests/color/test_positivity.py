import math

import numpy as np
import pytest

from vstain.color import StainError, positivity


def test_pixel_classes_of_a_known_map():
    # 10 pixels: 4 negative, 3 at 1+, 2 at 2+, 1 at 3+ (boundaries belong to the upper class).
    dab = np.array([[0.0, 0.1, 0.19, -0.05, 0.2, 0.3, 0.39, 0.4, 0.59, 0.6]], np.float32)
    p = positivity(dab)
    assert p.unit == "pixel" and p.cell_ids is None
    assert p.counts == (4, 3, 2, 1)
    assert p.percents == pytest.approx((40.0, 30.0, 20.0, 10.0))
    assert p.percent_positive == pytest.approx(60.0)
    assert p.h_score == pytest.approx(30 + 2 * 20 + 3 * 10)


def test_region_mask_restricts_pixels():
    dab = np.zeros((4, 4), np.float32)
    dab[:2] = 0.7
    region = np.zeros((4, 4), bool)
    region[1:3] = True  # 4 pixels at 3+, 4 negative
    p = positivity(dab, mask=region)
    assert p.counts == (4, 0, 0, 4)
    assert p.h_score == pytest.approx(150.0)


def test_cells_are_classed_by_their_mean_dab():
    dab = np.zeros((10, 10), np.float32)
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3], dab[0:3, 0:3] = 1, 0.1  # negative
    labels[0:3, 5:8], dab[0:3, 5:8] = 2, 0.5  # 2+
    labels[5:8, 0:3] = 7  # mean of 0.2 and 1.0 halves -> 0.6: 3+
    dab[5:8, 0:3] = np.array([0.2, 0.2, 1.4])[None, :] * np.ones((3, 1))
    dab[9, 9] = 5.0  # background pixel: never counted
    p = positivity(dab, labels=labels)
    assert p.unit == "cell"
    np.testing.assert_array_equal(p.cell_ids, [1, 2, 7])
    np.testing.assert_allclose(p.cell_mean_dab, [0.1, 0.5, 0.6], atol=1e-6)
    assert p.counts == (1, 0, 1, 1)
    assert p.percent_positive == pytest.approx(200 / 3)
    assert p.h_score == pytest.approx((2 + 3) * 100 / 3)


def test_mask_with_labels_keeps_only_cell_pixels_inside():
    dab = np.zeros((6, 6), np.float32)
    labels = np.zeros((6, 6), np.int32)
    labels[:, :3], labels[:, 3:] = 1, 2
    dab[:3, :3], dab[3:, :3] = 0.1, 0.9  # cell 1: mean 0.5 overall, 0.9 in the lower half
    region = np.zeros((6, 6), bool)
    region[3:, :] = True
    region[:, 3:] = False  # cell 2 lies wholly outside: not scored
    p = positivity(dab, labels=labels, mask=region)
    np.testing.assert_array_equal(p.cell_ids, [1])
    assert p.counts == (0, 0, 0, 1)


def test_nothing_to_score_gives_nan():
    p = positivity(np.zeros((3, 3)), labels=np.zeros((3, 3), int))
    assert p.total == 0 and math.isnan(p.percent_positive) and math.isnan(p.h_score)


def test_custom_thresholds_and_bad_input():
    dab = np.array([[0.25, 0.35]])
    assert positivity(dab, thresholds=(0.3, 0.5, 0.7)).counts == (1, 1, 0, 0)
    with pytest.raises(StainError, match="increasing"):
        positivity(dab, thresholds=(0.4, 0.2, 0.6))
    with pytest.raises(StainError, match="integer image"):
        positivity(dab, labels=np.ones((1, 2), float))
    with pytest.raises(StainError, match="2-D"):
        positivity(np.zeros((2, 2, 3)))
