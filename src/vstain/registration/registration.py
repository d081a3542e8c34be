"""Registration of an adjacent-section IHC slide to its H&E, on hematoxylin.

Both stains carry hematoxylin. A coarse similarity comes from ORB features at about
``COARSE_SIDE`` px and RANSAC, once for the IHC as is and once mirrored (ORB is rotation
invariant, so this covers every rotation and flip); it is refined to an affine map on tissue
windows at a finer level (`vstain.registration.refine`) and optionally by a dense optical-flow field
(`vstain.registration.flow`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import SimilarityTransform, warp

from vstain.io.limits import loads_bounded
from vstain.io.slide import Slide
from vstain.registration.errors import RegistrationError
from vstain.registration.field import DisplacementField
from vstain.registration.flow import flow_field
from vstain.registration.refine import apply, refine_affine
from vstain.registration.sampling import (
    block_centres,
    hematoxylin_through,
    sample,
    slide_hematoxylin,
)

QUALITY_OK = 0.3  # NCC of hematoxylin after warping; below this the result is not trusted
AGREEMENT_OK = 0.5  # fraction of refinement windows the map must explain to be trusted
COARSE_SIDE = 1200  # longer side (px) of the H&E image the features are found on
NCC_SIGMA = 4.0  # Gaussian blur (coarse px) before the NCC: compare tissue, not single cells
MIN_INLIERS = 12  # a fit with fewer RANSAC inliers is rejected
INVERSE_STEPS = 30  # fixed-point iterations inverting the displacement field

__all__ = ["AGREEMENT_OK", "QUALITY_OK", "Registration", "RegistrationError", "register"]


@dataclass
class Registration:
    """A map from H&E level-0 pixels to IHC level-0 pixels: ``matrix @ (p + field(p))``.

    ``agreement`` is the fraction of refinement windows the affine map explains (None when it
    was not refined); ``field`` the optional local displacement (None: affine only).
    """

    matrix: np.ndarray  # 3 x 3, H&E px -> IHC px (x, y)
    he_pixel_size: float | None
    ihc_pixel_size: float | None
    quality: float  # NCC of hematoxylin in the overlap after warping, in [0, 1]
    inliers: int
    agreement: float | None = None
    field: DisplacementField | None = None

    @property
    def ok(self) -> bool:
        """True when ``quality`` reaches ``QUALITY_OK`` and ``agreement`` ``AGREEMENT_OK``."""
        agrees = self.agreement is None or self.agreement >= AGREEMENT_OK
        return self.quality >= QUALITY_OK and agrees

    @property
    def matrix_um(self) -> np.ndarray:
        """The affine part in micrometres (H&E um -> IHC um); needs both pixel sizes."""
        if self.he_pixel_size is None or self.ihc_pixel_size is None:
            raise RegistrationError("A slide has no pixel size; the map is only known in pixels.")
        return (
            np.diag([self.ihc_pixel_size] * 2 + [1])
            @ self.matrix
            @ np.diag([1 / self.he_pixel_size] * 2 + [1])
        )

    def he_to_ihc_points(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) H&E (x, y) level-0 pixels to IHC level-0 pixels."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        return _map(self, xy)

    def ihc_to_he_points(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) IHC (x, y) level-0 pixels to H&E level-0 pixels."""
        p = apply(np.linalg.inv(self.matrix), np.asarray(xy, float).reshape(-1, 2))
        if self.field is None:
            return p
        target = p
        for _ in range(INVERSE_STEPS):  # solve p + d(p) = target
            p = target - self.field.at(p)
        return p

    def warp_ihc_region(
        self, ihc: Slide, x: int, y: int, w: int, h: int, downsample: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The IHC on the H&E region (x, y, w, h) of a level ``downsample`` times level 0.

        Returns (h, w, 3) uint8 (white where the IHC does not reach) and the (h, w) bool mask of
        pixels the IHC covers. Only the IHC under the region is read, from its closest level.
        """
        ys, xs = np.mgrid[0:h, 0:w]
        he0 = apply(block_centres(downsample), np.stack([xs + x, ys + y], -1))
        q = _map(self, he0)
        return sample(ihc, q, downsample * math.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    def warp_ihc_tile(
        self, ihc: Slide, x: int, y: int, w: int, h: int, level: int = 0
    ) -> np.ndarray:
        """The IHC resampled onto the H&E region (x, y, w, h) of H&E ``level``, (h, w, 3) uint8.

        ``level`` is taken as a power-of-two downsample of the H&E; outside the IHC is white.
        """
        return self.warp_ihc_region(ihc, x, y, w, h, 2.0**level)[0]

    def save(self, path: str | Path) -> None:
        """Write the registration as JSON (the displacement field inside it)."""
        data = {
            "matrix": self.matrix.tolist(),
            "he_pixel_size": self.he_pixel_size,
            "ihc_pixel_size": self.ihc_pixel_size,
            "quality": self.quality,
            "inliers": self.inliers,
            "agreement": self.agreement,
            "field": None if self.field is None else self.field.to_dict(),
        }
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> Registration:
        """Read a registration written by ``save``."""
        try:
            data = loads_bounded(Path(path).read_text())
            field = data.get("field")
            agreement = data.get("agreement")
            return cls(
                np.asarray(data["matrix"], float),
                data["he_pixel_size"],
                data["ihc_pixel_size"],
                float(data["quality"]),
                int(data["inliers"]),
                None if agreement is None else float(agreement),
                None if field is None else DisplacementField.from_dict(field),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise RegistrationError(
                f"Cannot read registration {path}: {e}. Save it again with Registration.save."
            ) from e


def _map(reg: Registration, xy: np.ndarray) -> np.ndarray:
    """H&E level-0 (..., 2) points to IHC level-0 points."""
    if reg.field is not None:
        xy = xy + reg.field.at(xy)
    return apply(reg.matrix, xy)


def _features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ORB keypoints (x, y) and descriptors, or None where the image has no features."""
    orb = ORB(n_keypoints=2000, fast_threshold=0.03)
    scaled = image / max(float(np.percentile(image, 99.5)), 1e-6)
    try:
        orb.detect_and_extract(np.clip(scaled, 0, 1))
    except RuntimeError:  # skimage raises this for images without contrast (blank glass)
        return None
    return orb.keypoints[:, ::-1], orb.descriptors


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    valid = np.isfinite(b)
    if valid.sum() < 100:
        return 0.0
    a, b = a[valid] - a[valid].mean(), b[valid] - b[valid].mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return max(0.0, float((a * b).sum()) / denom) if denom > 0 else 0.0


def _fit(
    he_pts: tuple[np.ndarray, np.ndarray] | None, ihc_pts: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, int] | None:
    """Similarity (3 x 3, H&E -> IHC) and inlier count, or None without a trustworthy fit."""
    if he_pts is None or ihc_pts is None:
        return None
    matches = match_descriptors(he_pts[1], ihc_pts[1], cross_check=True, max_ratio=0.9)
    if len(matches) < 6:
        return None
    model, inl = ransac(
        (he_pts[0][matches[:, 0]], ihc_pts[0][matches[:, 1]]),
        SimilarityTransform,
        min_samples=3,
        residual_threshold=2.0,
        max_trials=2000,
        rng=0,
    )
    if model is None or inl is None or inl.sum() < MIN_INLIERS:
        return None
    return model.params, int(inl.sum())


def _coarse(
    he_h: np.ndarray, ihc_h: np.ndarray, fh: int, fi: int
) -> tuple[float, np.ndarray, int] | None:
    """Best (NCC, level-0 similarity, inliers) of the IHC as is and mirrored, or None."""
    he_f = _features(he_h)
    he_smooth = ndimage.gaussian_filter(he_h, NCC_SIGMA)
    best = None
    for mirror in (False, True):
        image = ihc_h[:, ::-1] if mirror else ihc_h
        flip = np.array([[-1, 0, ihc_h.shape[1] - 1], [0, 1, 0], [0, 0, 1]], float)
        fit = _fit(he_f, _features(image))
        if fit is None:
            continue
        t, inliers = fit
        sigma = NCC_SIGMA * math.sqrt(abs(np.linalg.det(t[:2, :2])))  # same blur in H&E px
        smooth = ndimage.gaussian_filter(image, sigma)
        moved = warp(smooth, t, output_shape=he_h.shape, order=1, cval=np.nan)
        quality = _ncc(he_smooth, moved)
        if best is None or quality > best[0]:
            m = (flip if mirror else np.eye(3)) @ t
            full = block_centres(fi) @ m @ np.linalg.inv(block_centres(fh))
            best = (quality, full, inliers)
    return best


def _quality(reg: Registration, ihc: Slide, he_h: np.ndarray, fh: int) -> float:
    """NCC of the blurred H&E hematoxylin and the IHC hematoxylin brought onto it by ``reg``."""
    scale = fh * math.sqrt(abs(np.linalg.det(reg.matrix[:2, :2])))
    h, valid = hematoxylin_through(ihc, lambda xy: _map(reg, xy), he_h.shape, fh, scale)
    moved = ndimage.gaussian_filter(h, NCC_SIGMA)
    inside = ndimage.binary_erosion(valid, iterations=int(2 * NCC_SIGMA))
    return _ncc(ndimage.gaussian_filter(he_h, NCC_SIGMA), np.where(inside, moved, np.nan))


def register(
    he: Slide,
    ihc: Slide,
    *,
    refine: bool = True,
    flow: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Registration:
    """Register ``ihc`` to ``he`` on hematoxylin.

    Parameters
    ----------
    he, ihc
        The H&E and the IHC of an adjacent section.
    refine
        Refit the coarse similarity as an affine map on tissue windows at a finer level.
    flow
        Add a local displacement field from optical flow (only on a map that is ``ok``).
    progress
        Called with the fraction done (0-1).
    """
    report = progress or (lambda _: None)
    if (he.pixel_size is None) != (ihc.pixel_size is None):
        raise RegistrationError(
            "Only one slide has a pixel size; set pixel_size on both or on neither."
        )
    ratio = 1.0 if he.pixel_size is None else ihc.pixel_size / he.pixel_size
    fh = max(1, round(max(he.shape) / COARSE_SIDE))
    fi = max(1, round(fh / ratio))
    report(0.0)
    he_h = slide_hematoxylin(he, fh)
    coarse = _coarse(he_h, slide_hematoxylin(ihc, fi), fh, fi)
    report(0.5)
    if coarse is None:
        report(1.0)
        return Registration(
            np.eye(3), he.pixel_size, ihc.pixel_size, 0.0, 0, 0.0 if refine else None
        )
    quality, matrix, inliers = coarse
    reg = Registration(matrix, he.pixel_size, ihc.pixel_size, quality, inliers)
    if refine:
        fit = refine_affine(he, ihc, matrix, he_h, fh)
        reg = replace(reg, matrix=fit.matrix, agreement=fit.agreement)
        reg = replace(reg, quality=_quality(reg, ihc, he_h, fh))
    report(0.7)
    if flow and reg.ok:
        reg = replace(reg, field=flow_field(he, ihc, reg.matrix))
        reg = replace(reg, quality=_quality(reg, ihc, he_h, fh))
    report(1.0)
    return reg


def measure_quality(reg: Registration, he: Slide, ihc: Slide) -> float:
    """The quality `register` reports, for any map (e.g. one fitted to control points)."""
    fh = max(1, round(max(he.shape) / COARSE_SIDE))
    return _quality(reg, ihc, slide_hematoxylin(he, fh), fh)
