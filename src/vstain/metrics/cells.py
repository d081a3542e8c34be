"""Positive-cell detection scored object by object against a reference mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: A predicted object matches a reference object when their overlap has at least this IoU.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Detection:
    """Matched (true positive), spurious (false positive) and missed (false negative) objects."""

    true_positives: int
    false_positives: int
    false_negatives: int

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


def _objects(mask_or_labels: np.ndarray) -> np.ndarray:
    """Instance labels: connected components of a boolean mask, or labels as given."""
    arr = np.asarray(mask_or_labels)
    return ndimage.label(arr)[0] if arr.dtype == bool else arr.astype(np.int64)


def match_objects(
    predicted: np.ndarray, reference: np.ndarray, iou: float = MATCH_IOU
) -> Detection:
    """Count one-to-one matches between predicted and reference objects (masks or labels).

    Two objects match when their IoU >= ``iou`` (> 0.5 makes the match unique, so no assignment
    problem has to be solved).
    """
    pred, ref = _objects(predicted), _objects(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    n_pred, n_ref = int(pred.max()), int(ref.max())
    both = (pred > 0) & (ref > 0)
    pairs, overlap = np.unique(np.stack([pred[both], ref[both]]), axis=1, return_counts=True)
    size_pred = np.bincount(pred.ravel(), minlength=n_pred + 1)
    size_ref = np.bincount(ref.ravel(), minlength=n_ref + 1)
    union = size_pred[pairs[0]] + size_ref[pairs[1]] - overlap
    matched = overlap / union >= iou
    tp = len(np.unique(pairs[0][matched]))
    n_pred = len(np.unique(pred[pred > 0]))
    n_ref = len(np.unique(ref[ref > 0]))
    return Detection(tp, n_pred - tp, n_ref - tp)


def cell_calls(
    dab: np.ndarray,
    nuclei: np.ndarray,
    cell_ids: np.ndarray,
    *,
    threshold: float = 0.2,
    grow: int = 3,
) -> np.ndarray:
    """Per cell of ``cell_ids``: is the mean DAB OD around its nucleus (grown by ``grow`` px, so
    membrane and cytoplasm count) at least ``threshold`` (QuPath's 1+)? Cells absent -> False."""
    grown = ndimage.grey_dilation(nuclei, size=2 * grow + 1) if grow else nuclei
    region = np.where(nuclei > 0, nuclei, grown)
    ids = np.asarray(cell_ids)
    sums = ndimage.sum_labels(dab, region, ids)
    counts = ndimage.sum_labels(np.ones_like(dab), region, ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0) >= threshold


def score_calls(called: np.ndarray, truth: np.ndarray) -> Detection:
    """Detection counts of per-cell positive calls against per-cell truth."""
    called, truth = np.asarray(called, bool), np.asarray(truth, bool)
    return Detection(
        int((called & truth).sum()), int((called & ~truth).sum()), int((~called & truth).sum())
    )
