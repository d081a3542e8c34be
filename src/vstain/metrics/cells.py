"""Positive cells: object-level detection scores against a reference mask, and per-cell calls.

Object matching (``match_objects``): objects are the connected components of a boolean mask (or the
labels of an integer image). A predicted and a reference object are a candidate pair when their
IoU is at least ``iou`` (0.5) or, with ``centroid=True``, when the centroid of either lies inside
the other (this credits a small or merged prediction that sits on a reference cell). Each object is
matched at most once, by a maximum bipartite matching over the candidate pairs; matches are true
positives, unmatched predictions false positives and unmatched references false negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

from vstain.color import QUPATH_THRESHOLDS, DabStats, coarse_dab_mask

#: Objects with at least this IoU are a candidate match.
MATCH_IOU = 0.5
#: DAB OD from which a pixel counts as positive (QuPath's 1+).
POSITIVE_OD = QUPATH_THRESHOLDS[0]


@dataclass(frozen=True)
class Detection:
    """Matched (true positive), spurious (false positive) and missed (false negative) objects.

    Scores are NaN when undefined (nothing predicted, nothing to find). ``+`` pools counts.
    """

    true_positives: int
    false_positives: int
    false_negatives: int

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else float("nan")

    @property
    def recall(self) -> float:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else float("nan")

    @property
    def f1(self) -> float:
        n = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / n if n else float("nan")


def positive_cells(
    rgb: np.ndarray, threshold: float = POSITIVE_OD, min_size: int = 16, max_hole: int = 64
) -> np.ndarray:
    """Mask (H, W) bool of DAB-positive cells of an IHC image: DAB OD above a fixed ``threshold``.

    The same absolute threshold for every image (unlike ``coarse_dab_mask``'s default
    mean + k * std), so a virtual and a real IHC are judged alike; objects smaller than
    ``min_size`` px are dropped and holes up to ``max_hole`` px filled.
    """
    return coarse_dab_mask(
        rgb, stats=DabStats(threshold, 0.0), k=0.0, min_size=min_size, max_hole=max_hole
    )


def _objects(mask_or_labels: np.ndarray) -> np.ndarray:
    """Instance labels: connected components of a boolean mask, or the labels as given."""
    arr = np.asarray(mask_or_labels)
    return ndimage.label(arr)[0] if arr.dtype == bool else arr.astype(np.int64)


def _centroid_pairs(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(2, N) pairs (inner id, outer id): the centroid of the ``inner`` object is in ``outer``."""
    ids = np.unique(inner[inner > 0])
    if ids.size == 0:
        return np.zeros((2, 0), np.int64)
    centres = np.rint(ndimage.center_of_mass(np.ones(inner.shape), inner, ids)).astype(int)
    hit = outer[centres[:, 0], centres[:, 1]]
    return np.stack([ids[hit > 0], hit[hit > 0]])


def match_objects(
    predicted: np.ndarray, reference: np.ndarray, iou: float = MATCH_IOU, centroid: bool = True
) -> Detection:
    """Match predicted to reference objects one to one (see the module docstring).

    ``predicted`` and ``reference`` are boolean masks or integer label images of one shape.
    """
    pred, ref = _objects(predicted), _objects(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    both = (pred > 0) & (ref > 0)
    pairs, overlap = np.unique(np.stack([pred[both], ref[both]]), axis=1, return_counts=True)
    size_pred = np.bincount(pred.ravel(), minlength=int(pred.max()) + 1)
    size_ref = np.bincount(ref.ravel(), minlength=int(ref.max()) + 1)
    union = size_pred[pairs[0]] + size_ref[pairs[1]] - overlap
    candidates = [pairs[:, overlap / union >= iou]]
    if centroid:
        candidates += [_centroid_pairs(pred, ref), _centroid_pairs(ref, pred)[::-1]]
    edges = np.concatenate(candidates, axis=1)
    graph = sparse.csr_matrix(
        (np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(len(size_pred), len(size_ref))
    )
    tp = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    n_pred = np.unique(pred[pred > 0]).size
    n_ref = np.unique(ref[ref > 0]).size
    return Detection(tp, n_pred - tp, n_ref - tp)


def cell_calls(
    dab: np.ndarray,
    nuclei: np.ndarray,
    cell_ids: np.ndarray,
    *,
    threshold: float = POSITIVE_OD,
    grow: int = 3,
) -> np.ndarray:
    """Per cell of ``cell_ids``: is the mean DAB OD around its nucleus at least ``threshold``?

    The nucleus (label in ``nuclei``) is grown by ``grow`` px so that membrane and cytoplasm
    count. Cells absent from ``nuclei`` are called negative.
    """
    grown = ndimage.grey_dilation(nuclei, size=2 * grow + 1) if grow else nuclei
    region = np.where(nuclei > 0, nuclei, grown)
    ids = np.asarray(cell_ids)
    sums = ndimage.sum_labels(dab, region, ids)
    counts = ndimage.sum_labels(np.ones_like(dab), region, ids)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0) >= threshold


def score_calls(called: np.ndarray, truth: np.ndarray) -> Detection:
    """Detection counts of per-cell positive calls against per-cell truth."""
    called, truth = np.asarray(called, bool), np.asarray(truth, bool)
    return Detection(
        int((called & truth).sum()), int((called & ~truth).sum()), int((~called & truth).sum())
    )
