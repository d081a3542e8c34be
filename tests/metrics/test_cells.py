import numpy as np
import pytest

from tests.metrics.conftest import blobs, stained
from vstain.metrics import Detection, match_objects, positive_cells
from vstain.metrics.cells import cell_calls, score_calls


def squares(shape, corners, size=6):
    mask = np.zeros(shape, bool)
    for r, c in corners:
        mask[r : r + size, c : c + size] = True
    return mask


REF = [(2, 2), (20, 20), (30, 2)]


def test_a_mask_against_itself_has_f1_one():
    ref = squares((40, 40), REF)
    det = match_objects(ref, ref)
    assert (det.true_positives, det.false_positives, det.false_negatives) == (3, 0, 0)
    assert det.f1 == det.precision == det.recall == 1.0


@pytest.mark.parametrize(
    ("shift", "matches"),
    [(1, 3), (4, 0)],  # 1 px: IoU 30/42 >= 0.5; 4 px: IoU 12/60 and centroids outside
)
def test_a_shifted_copy_matches_as_its_overlap_says(shift, matches):
    ref = squares((40, 40), REF)
    pred = squares((40, 40), [(r, c + shift) for r, c in REF])
    det = match_objects(pred, ref)
    assert det.true_positives == matches
    assert det.f1 == pytest.approx(matches / 3)


def test_centroid_inside_rescues_small_and_merged_objects():
    ref = squares((40, 40), [(2, 2)], size=12)
    small = squares((40, 40), [(6, 6)], size=3)  # IoU 9/144, but inside the reference
    assert match_objects(small, ref).true_positives == 1
    assert match_objects(small, ref, centroid=False).true_positives == 0
    two = squares((40, 40), [(2, 2), (2, 12)], size=6)
    merged = np.zeros((40, 40), bool)
    merged[2:8, 2:18] = True  # one object over both: matched once, one reference missed
    det = match_objects(merged, two)
    assert (det.true_positives, det.false_positives, det.false_negatives) == (1, 0, 1)


def test_counts_hits_misses_false_alarms_and_pools():
    ref = squares((40, 40), REF)
    pred = np.zeros_like(ref)
    pred[2:8, 3:9] = True  # match
    pred[10:14, 30:34] = True  # nothing there
    det = match_objects(pred, ref)
    assert (det.true_positives, det.false_positives, det.false_negatives) == (1, 1, 2)
    pooled = det + Detection(3, 0, 0)
    assert (pooled.precision, pooled.recall) == (pytest.approx(4 / 5), pytest.approx(4 / 6))
    assert np.isnan(Detection(0, 0, 0).f1)


def test_labels_are_objects_as_given():
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touching: two objects, not one component
    det = match_objects(labels, labels)
    assert det.true_positives == 2


def test_positive_cells_use_an_absolute_dab_threshold(four_cells):
    dab = blobs((50, 50), four_cells[:2], value=0.5) + blobs((50, 50), four_cells[2:], value=0.1)
    mask = positive_cells(stained(dab))
    assert mask[10, 10] and mask[10, 40] and not mask[40, 10] and not mask[40, 40]
    assert not positive_cells(stained(blobs((50, 50), four_cells, value=0.1))).any()


def test_cell_calls_and_scores():
    nuclei = np.zeros((30, 30), np.int32)
    nuclei[5:9, 5:9] = 7
    nuclei[20:24, 20:24] = 9
    dab = np.zeros((30, 30), np.float32)
    dab[2:12, 2:12] = 0.5  # cell 7 sits in brown; cell 9 does not
    called = cell_calls(dab, nuclei, np.array([7, 9, 11]))
    assert called.tolist() == [True, False, False]  # 11 is not in the image
    det = score_calls(called, np.array([True, True, False]))
    assert (det.true_positives, det.false_positives, det.false_negatives) == (1, 0, 1)
