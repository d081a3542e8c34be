"""Similarity registration of an adjacent-section IHC slide to its H&E, on hematoxylin.

Both stains carry hematoxylin, so ORB features of the hematoxylin concentration at a coarse
scale are matched and a similarity transform is fitted with RANSAC, once for the IHC as is and
once mirrored (ORB is rotation invariant, so this covers every rotation and flip).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import SimilarityTransform, warp

from vstain.color import rgb_to_concentrations
from vstain.errors import VstainError
from vstain.io.slide import Slide

QUALITY_OK = 0.3  # NCC of hematoxylin after warping; below this the result is not trusted
COARSE_SIDE = 1200  # longer side (px) of the H&E image the features are found on
NCC_SIGMA = 4.0  # Gaussian blur (coarse px) before the NCC: compare tissue, not single cells
MIN_INLIERS = 12  # a fit with fewer RANSAC inliers is rejected


class RegistrationError(VstainError):
    """Two slides cannot be registered (no pixel size ratio, no common features)."""


@dataclass
class Registration:
    """A similarity / affine map from H&E level-0 pixels to IHC level-0 pixels."""

    matrix: np.ndarray  # 3 x 3, H&E px -> IHC px (x, y)
    he_pixel_size: float | None
    ihc_pixel_size: float | None
    quality: float  # NCC of hematoxylin in the overlap after warping, in [0, 1]
    inliers: int

    @property
    def ok(self) -> bool:
        """True when ``quality`` reaches ``QUALITY_OK``."""
        return self.quality >= QUALITY_OK

    @property
    def matrix_um(self) -> np.ndarray:
        """The map in micrometres (H&E um -> IHC um); needs both pixel sizes."""
        if self.he_pixel_size is None or self.ihc_pixel_size is None:
            raise RegistrationError("A slide has no pixel size; the map is only known in pixels.")
        return (
            np.diag([self.ihc_pixel_size] * 2 + [1])
            @ self.matrix
            @ np.diag([1 / self.he_pixel_size] * 2 + [1])
        )

    def he_to_ihc_points(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) H&E (x, y) level-0 pixels to IHC level-0 pixels."""
        return _apply(self.matrix, xy)

    def ihc_to_he_points(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) IHC (x, y) level-0 pixels to H&E level-0 pixels."""
        return _apply(np.linalg.inv(self.matrix), xy)

    def warp_ihc_tile(
        self, ihc: Slide, x: int, y: int, w: int, h: int, level: int = 0
    ) -> np.ndarray:
        """The IHC resampled onto the H&E region (x, y, w, h) of H&E ``level``, (h, w, 3) uint8.

        ``level`` is taken as a power-of-two downsample of the H&E. Only the IHC level-0
        region under the tile is read; outside the IHC is white.
        """
        f = 2.0**level
        to_he0 = np.array([[f, 0, x * f + (f - 1) / 2], [0, f, y * f + (f - 1) / 2], [0, 0, 1]])
        tile_to_ihc = self.matrix @ to_he0
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
        q = _apply(tile_to_ihc, corners)
        ih, iw = ihc.shape
        x0, y0 = np.floor(q.min(0)).astype(int) - 2
        x1, y1 = np.ceil(q.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, iw), min(y1, ih)
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 <= x0 or y1 <= y0:
            return out
        region = ihc.levels[0][y0:y1, x0:x1].compute()
        local = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ tile_to_ihc
        rc = _swap_xy(local)  # output (row, col) -> input (row, col)
        for c in range(3):
            out[..., c] = ndimage.affine_transform(
                region[..., c], rc, output_shape=(h, w), order=1, cval=255
            )
        return out

    def save(self, path: str | Path) -> None:
        """Write the registration as JSON."""
        data = {
            "matrix": self.matrix.tolist(),
            "he_pixel_size": self.he_pixel_size,
            "ihc_pixel_size": self.ihc_pixel_size,
            "quality": self.quality,
            "inliers": self.inliers,
        }
        Path(path).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Registration:
        """Read a registration written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                np.asarray(data["matrix"], float),
                data["he_pixel_size"],
                data["ihc_pixel_size"],
                float(data["quality"]),
                int(data["inliers"]),
            )
        except (OSError, ValueError, KeyError) as e:
            raise RegistrationError(
                f"Cannot read registration {path}: {e}. Save it again with Registration.save."
            ) from e


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, float).reshape(-1, 2)
    return xy @ m[:2, :2].T + m[:2, 2]


def _swap_xy(m: np.ndarray) -> np.ndarray:
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    return p @ m @ p


def _coarse_to_full(f: int) -> np.ndarray:
    """Map a pixel of a ``f``-times block-averaged image to level-0 pixels."""
    return np.array([[f, 0, (f - 1) / 2], [0, f, (f - 1) / 2], [0, 0, 1]], float)


def _hematoxylin(slide: Slide, f: int) -> np.ndarray:
    """Hematoxylin concentration of level 0 block-averaged by ``f``."""
    lvl = slide.levels[0]
    h, w = (lvl.shape[0] // f) * f, (lvl.shape[1] // f) * f
    rgb = lvl[:h, :w].astype(np.float32).reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
    rgb = np.asarray(rgb.compute())
    conc = rgb_to_concentrations(np.clip(rgb, 1, 255).astype(np.uint8))[..., 0]
    return np.clip(conc, 0, None).astype(np.float32)


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


def register(
    he: Slide, ihc: Slide, *, progress: Callable[[float], None] | None = None
) -> Registration:
    """Register ``ihc`` to ``he`` with a similarity transform found on hematoxylin.

    Parameters
    ----------
    he, ihc
        The H&E and the IHC of an adjacent section.
    progress
        Called with the fraction done (0-1).
    """
    if (he.pixel_size is None) != (ihc.pixel_size is None):
        raise RegistrationError(
            "Only one slide has a pixel size; set pixel_size on both or on neither."
        )
    ratio = 1.0 if he.pixel_size is None else ihc.pixel_size / he.pixel_size
    fh = max(1, round(max(he.shape) / COARSE_SIDE))
    fi = max(1, round(fh / ratio))
    he_h, ihc_h = _hematoxylin(he, fh), _hematoxylin(ihc, fi)
    he_f = _features(he_h)
    he_smooth = ndimage.gaussian_filter(he_h, NCC_SIGMA)
    best: tuple[float, np.ndarray, int] = (-1.0, np.eye(3), 0)
    for step, mirror in enumerate((False, True)):
        if progress is not None:
            progress(step / 2)
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
        if quality > best[0]:
            m = (flip if mirror else np.eye(3)) @ t
            full = _coarse_to_full(fi) @ m @ np.linalg.inv(_coarse_to_full(fh))
            best = (quality, full, inliers)
    if progress is not None:
        progress(1.0)
    return Registration(best[1], he.pixel_size, ihc.pixel_size, max(best[0], 0.0), best[2])
