"""Per-slide stain vectors by Macenko's method (Macenko et al., ISBI 2009).

Steps: optical density of the tissue pixels; drop pixels whose OD vector is shorter than ``beta``
(background, too faint to carry a colour); the plane of the two leading eigenvectors of the OD
second-moment matrix; the angle of each pixel in that plane; the stains are the directions at the
``percentile`` and ``100 - percentile`` angles. The stain the eye sees as bluer (larger red OD
minus blue OD) is hematoxylin; the other is eosin (``kind="he"``) or DAB (``kind="ihc"``). The
third vector is their normalised cross product, named ``"residual"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from vstain.color.optics import StainMatrix, rgb_to_od
from vstain.color.pixels import sample_pixels
from vstain.errors import StainError

if TYPE_CHECKING:
    from vstain.io.slide import Slide

#: Name of the second stain for each kind of slide.
SECOND_STAIN = {"he": "eosin", "ihc": "dab"}
#: Fewer OD pixels than this cannot give a stable plane.
MIN_PIXELS = 100
#: Two stain directions closer than this (degrees) mean the image shows one stain only.
MIN_SEPARATION_DEG = 5.0


def _positive(v: np.ndarray) -> np.ndarray:
    """Unit vector ``v`` with the sign that makes its components sum to >= 0."""
    v = v / np.linalg.norm(v)
    return v if v.sum() >= 0 else -v


def _blueness(v: np.ndarray) -> float:
    """How blue a stain looks: red OD minus blue OD (it absorbs red, transmits blue)."""
    return float(v[0] - v[2])


def _od_plane(od: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3, 2) of the plane of the two leading eigenvectors of ``od.T @ od``."""
    _, vecs = np.linalg.eigh(od.T @ od / len(od))
    first = _positive(vecs[:, 2])
    return np.stack([first, vecs[:, 1]], axis=1)


def macenko_vectors(od: np.ndarray, percentile: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The two extreme stain directions (unit, positive) of OD pixels (N, 3)."""
    plane = _od_plane(od)
    t = od @ plane
    phi = np.arctan2(t[:, 1], t[:, 0])
    lo, hi = np.percentile(phi, [percentile, 100.0 - percentile])
    if np.degrees(hi - lo) < MIN_SEPARATION_DEG:
        raise StainError(
            f"The tissue pixels span only {np.degrees(hi - lo):.1f} degrees of colour, so two "
            "stains cannot be separated. Give an image (or mask) that shows both stains."
        )
    v1 = _positive(plane @ np.array([np.cos(lo), np.sin(lo)]))
    v2 = _positive(plane @ np.array([np.cos(hi), np.sin(hi)]))
    return v1, v2


def estimate_stains(
    image: np.ndarray | Slide,
    *,
    kind: Literal["he", "ihc"] = "he",
    mask: np.ndarray | None = None,
    level: int = -1,
    beta: float = 0.15,
    percentile: float = 1.0,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> StainMatrix:
    """Estimate the stain vectors of an H&E or IHC (hematoxylin + DAB) image by Macenko's method.

    Parameters
    ----------
    image
        RGB array (H, W, 3), or a Slide (its ``level``, the coarsest by default, is read).
    kind
        ``"he"``: hematoxylin and eosin; ``"ihc"``: hematoxylin and DAB.
    mask
        Optional tissue mask (H, W) of the array or level; default all pixels.
    beta
        Pixels whose OD vector has Euclidean norm below ``beta`` are background and ignored.
    percentile
        Angle percentiles ``percentile`` and ``100 - percentile`` give the two stains.
    max_pixels, seed
        At most ``max_pixels`` masked pixels are used, drawn with ``seed``.

    Returns
    -------
    StainMatrix
        Rows hematoxylin, eosin or dab, residual (normalised cross product of the first two).
    """
    pixels = sample_pixels(image, mask, level=level, max_pixels=max_pixels, seed=seed)
    return stains_from_od(rgb_to_od(pixels).astype(np.float64), kind, beta, percentile)


def stains_from_od(
    od: np.ndarray, kind: str = "he", beta: float = 0.15, percentile: float = 1.0
) -> StainMatrix:
    """Macenko's stain vectors of optical densities (N, 3); see `estimate_stains`."""
    if kind not in SECOND_STAIN:
        raise StainError(f"Unknown slide kind {kind!r}: use 'he' (H&E) or 'ihc' (H-DAB).")
    od = od[np.linalg.norm(od, axis=1) >= beta]
    if len(od) < MIN_PIXELS:
        raise StainError(
            f"Only {len(od)} pixels have an optical density of at least {beta}, too few to "
            f"estimate stains (need {MIN_PIXELS}). Give an image or mask that contains tissue."
        )
    v1, v2 = macenko_vectors(od, percentile)
    hema, other = (v1, v2) if _blueness(v1) >= _blueness(v2) else (v2, v1)
    residual = _positive(np.cross(hema, other))
    return StainMatrix(
        np.stack([hema, other, residual]), ("hematoxylin", SECOND_STAIN[kind], "residual")
    )
