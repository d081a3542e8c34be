"""DAB positivity scored like QuPath: intensity classes, percent positive and H-score.

A value ``v`` (mean DAB OD of a cell, or a pixel's DAB OD) is negative below ``t1``, 1+ for
``t1 <= v < t2``, 2+ for ``t2 <= v < t3`` and 3+ from ``t3`` on, with QuPath's default thresholds
0.2 / 0.4 / 0.6 OD. Percentages are of all scored cells (or pixels); percent positive is
%1+ + %2+ + %3+ and the H-score is 1 x %1+ + 2 x %2+ + 3 x %3+ (0 to 300). With nothing to score
they are NaN, as in QuPath.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vstain.color.pixels import check_mask
from vstain.errors import StainError

#: QuPath's default 1+ / 2+ / 3+ thresholds on DAB OD.
QUPATH_THRESHOLDS = (0.2, 0.4, 0.6)


@dataclass(frozen=True)
class Positivity:
    """Counts per intensity class and the scores derived from them.

    ``unit`` says what was counted: ``"cell"`` (labels given: one value per cell, its mean DAB
    OD) or ``"pixel"`` (no labels: every pixel in the region). ``cell_ids`` and
    ``cell_mean_dab`` list the scored cells when ``unit == "cell"``, else they are None.
    """

    unit: Literal["cell", "pixel"]
    counts: tuple[int, int, int, int]
    thresholds: tuple[float, float, float]
    cell_ids: np.ndarray | None = None
    cell_mean_dab: np.ndarray | None = None

    @property
    def total(self) -> int:
        """Number of scored cells or pixels."""
        return sum(self.counts)

    @property
    def percents(self) -> tuple[float, float, float, float]:
        """Percent negative, 1+, 2+, 3+ (NaN when nothing was scored)."""
        if self.total == 0:
            return (float("nan"),) * 4
        return tuple(100.0 * c / self.total for c in self.counts)

    @property
    def percent_positive(self) -> float:
        """Percent of cells or pixels at 1+ or above."""
        return sum(self.percents[1:])

    @property
    def h_score(self) -> float:
        """1 x %1+ + 2 x %2+ + 3 x %3+, from 0 to 300."""
        p = self.percents
        return p[1] + 2.0 * p[2] + 3.0 * p[3]


def _check_thresholds(thresholds: tuple[float, float, float]) -> tuple[float, float, float]:
    t = tuple(float(x) for x in thresholds)
    if len(t) != 3 or not t[0] < t[1] < t[2]:
        raise StainError(
            f"Positivity thresholds must be three increasing DAB OD values, got {thresholds}; "
            "QuPath's defaults are (0.2, 0.4, 0.6)."
        )
    return t


def _class_counts(values: np.ndarray, thresholds: tuple[float, float, float]) -> tuple[int, ...]:
    classes = np.digitize(values, np.asarray(thresholds, values.dtype))
    return tuple(int(c) for c in np.bincount(classes.ravel(), minlength=4))


def cell_means(dab: np.ndarray, labels: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, ...]:
    """Ids (sorted) and mean DAB of the labelled cells, over their pixels inside ``region``."""
    keep = region & (labels > 0)
    ids, inverse = np.unique(labels[keep], return_inverse=True)
    sums = np.bincount(inverse, weights=dab[keep], minlength=len(ids))
    sizes = np.bincount(inverse, minlength=len(ids))
    return ids, (sums / np.maximum(sizes, 1)).astype(np.float32)


def positivity(
    dab_od: np.ndarray,
    labels: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    thresholds: tuple[float, float, float] = QUPATH_THRESHOLDS,
) -> Positivity:
    """Score DAB positivity of cells (``labels`` given) or of the pixels of a region.

    Parameters
    ----------
    dab_od
        DAB map (H, W) in OD units, e.g. from ``dab_od``.
    labels
        Cell labels (H, W), 0 = background. Each cell is classed by its mean DAB OD.
    mask
        Region (H, W) to score; default everything. With labels, only cell pixels inside it
        count, and cells with no pixel inside are not scored.
    thresholds
        DAB OD thresholds of 1+, 2+, 3+.
    """
    t = _check_thresholds(thresholds)
    dab = np.asarray(dab_od, dtype=np.float32)
    if dab.ndim != 2:
        raise StainError(f"Expected a 2-D DAB map, got shape {dab.shape}.")
    region = check_mask(mask, dab.shape)
    region = np.ones(dab.shape, bool) if region is None else region
    if labels is None:
        return Positivity("pixel", _class_counts(dab[region], t), t)
    labels = np.asarray(labels)
    if labels.shape != dab.shape or not np.issubdtype(labels.dtype, np.integer):
        raise StainError(
            f"Labels must be an integer image of the DAB map's shape {dab.shape}, got "
            f"{labels.dtype} {labels.shape}."
        )
    ids, means = cell_means(dab, labels, region)
    return Positivity("cell", _class_counts(means, t), t, ids, means)
