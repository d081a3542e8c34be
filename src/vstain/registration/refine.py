"""Affine refinement of a coarse registration by matching tissue windows at a finer level.

The coarse map is found at about 1200 px; here up to ``MAX_WINDOWS`` tissue-rich windows of the
H&E hematoxylin, at up to ``FINE_GAIN`` times the coarse resolution, are matched by phase
correlation against the IHC hematoxylin resampled through the current map, and an affine map is
fitted to the window centres with RANSAC. Two passes. ``agreement``, the fraction of all chosen
windows (also those the map sends off the IHC) that the final fit explains, says whether the map
can be trusted: a map that fits only part of the tissue is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.filters import window
from skimage.measure import ransac
from skimage.registration import phase_cross_correlation
from skimage.transform import AffineTransform

from vstain.io.slide import Slide
from vstain.registration.sampling import block_centres, hematoxylin, read_block, sample

FINE_GAIN = 4  # the fine level has up to this many times the coarse resolution
WINDOW = 96  # side of a matched window, in fine-level px
MAX_WINDOWS = 48
MIN_WINDOWS = 6  # fewer matched windows (or RANSAC inliers) and the map is not refined
TOLERANCE = 0.1  # a window agrees with a fit within this fraction of its side
PASSES = 2


@dataclass(frozen=True)
class Refinement:
    """The refined map (3 x 3, H&E -> IHC level-0 px) and how well the windows agree with it."""

    matrix: np.ndarray
    agreement: float  # fraction of the chosen windows within tolerance of the fit, 0-1
    windows: int  # windows chosen


def apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3 x 3 map to (..., 2) (x, y) points."""
    xy = np.asarray(xy, float)
    return xy @ m[:2, :2].T + m[:2, 2]


def fine_factor(coarse_factor: int) -> int:
    """Block-average factor of the fine level for a coarse level block-averaged by that much."""
    return max(1, round(coarse_factor / FINE_GAIN))


def pick_windows(he_h: np.ndarray, fh: int, ff: int) -> list[tuple[int, int]]:
    """Level-0 top-left corners of the most textured windows, one per cell of a grid.

    ``he_h`` is the H&E hematoxylin block-averaged by ``fh``; windows are ``WINDOW * ff`` px.
    """
    n = max(2, int(WINDOW * ff / fh))
    rows, cols = he_h.shape[0] // n, he_h.shape[1] // n
    if rows < 1 or cols < 1:
        return []
    cells = he_h[: rows * n, : cols * n].reshape(rows, n, cols, n)
    score = cells.std(axis=(1, 3)).ravel()
    best = np.argsort(score)[::-1][:MAX_WINDOWS]
    best = best[score[best] > 0.25 * score[best[0]]]  # skip glass and nearly empty cells
    return [(int(c % cols) * n * fh, int(c // cols) * n * fh) for c in best]


def match_window(
    he: Slide, ihc: Slide, m: np.ndarray, x0: int, y0: int, ff: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """H&E centre of one window and the IHC point phase correlation matches to it (level 0).

    None where the window does not lie wholly on the IHC under ``m``.
    """
    ref = hematoxylin(read_block(he, x0, y0, WINDOW, WINDOW, ff))
    ys, xs = np.mgrid[0:WINDOW, 0:WINDOW]
    grid = apply(block_centres(ff), np.stack([xs, ys], -1)) + np.array([x0, y0])
    scale = ff * math.sqrt(abs(np.linalg.det(m[:2, :2])))
    rgb, valid = sample(ihc, apply(m, grid), scale)
    if not valid.all():
        return None
    mov = hematoxylin(rgb)
    taper = window("hann", ref.shape)
    shift, _, _ = phase_cross_correlation(
        (ref - ref.mean()) * taper, (mov - mov.mean()) * taper, upsample_factor=10
    )
    centre = np.array([x0 + (WINDOW * ff - 1) / 2, y0 + (WINDOW * ff - 1) / 2])
    return centre, apply(m, centre - ff * shift[::-1])


def refine_affine(
    he: Slide, ihc: Slide, matrix: np.ndarray, he_h: np.ndarray, fh: int
) -> Refinement:
    """Refit ``matrix`` as an affine map on windows matched at the fine level (see module)."""
    ff = fine_factor(fh)
    corners = pick_windows(he_h, fh, ff)
    m, agreement, count = matrix, 0.0, len(corners)
    for _ in range(PASSES):
        pairs = [p for c in corners if (p := match_window(he, ihc, m, *c, ff)) is not None]
        if len(pairs) < MIN_WINDOWS:
            return Refinement(matrix, 0.0, count)
        src, dst = (np.array(v) for v in zip(*pairs, strict=True))
        model, inliers = ransac(
            (src, dst),
            AffineTransform,
            min_samples=3,
            residual_threshold=TOLERANCE * WINDOW * ff,
            max_trials=1000,
            rng=0,
        )
        agreement = 0.0 if inliers is None else float(inliers.sum()) / count
        if model is None or inliers is None or inliers.sum() < MIN_WINDOWS:
            return Refinement(matrix, agreement, count)
        m = model.params
    return Refinement(m, agreement, count)
