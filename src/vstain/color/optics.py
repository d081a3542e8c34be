"""Beer-Lambert optics of brightfield stains in QuPath's units.

Optical density is ``OD = -log10(I / I0)`` per RGB channel with ``I0 = 255``; a stain is a unit
vector in OD space; a pixel's OD is the sum of concentration x stain vector. Concentrations are
therefore in OD units, so QuPath's DAB thresholds (0.2 / 0.4 / 0.6) apply to them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import rgb_from_hed

I0 = 255.0
#: Smallest transmitted intensity considered, so OD stays finite (OD of 1/255 is about 2.4).
MIN_INTENSITY = 1.0


def _unit_rows(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@dataclass(frozen=True)
class StainMatrix:
    """Three unit stain vectors (rows, OD space) and their names."""

    vectors: np.ndarray
    names: tuple[str, str, str]

    def __post_init__(self):
        v = _unit_rows(self.vectors)
        if v.shape != (3, 3) or abs(np.linalg.det(v)) < 1e-6:
            raise ValueError("stain vectors must be three linearly independent RGB OD vectors")
        object.__setattr__(self, "vectors", v)

    @property
    def inverse(self) -> np.ndarray:
        """Matrix taking OD (row vectors) to concentrations."""
        return np.linalg.inv(self.vectors)


#: Hematoxylin, eosin, DAB: scikit-image's (Ruifrok & Johnston) vectors, normalised.
HED = StainMatrix(rgb_from_hed, ("hematoxylin", "eosin", "dab"))


def _od(rgb: np.ndarray) -> np.ndarray:
    i = np.maximum(np.asarray(rgb, dtype=np.float32), MIN_INTENSITY)
    return -np.log10(i / I0)


#: Optical density of every uint8 level (the same float32 values `_od` computes).
OD_LUT = _od(np.arange(256))


def rgb_to_od(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (or float in 0..255) -> optical density, float32, same shape."""
    rgb = np.asarray(rgb)
    return OD_LUT[rgb] if rgb.dtype == np.uint8 else _od(rgb)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """Optical density -> RGB uint8 (rounded, clipped)."""
    rgb = np.rint(I0 * np.power(10.0, -np.asarray(od, np.float32)))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def od_to_concentrations(od: np.ndarray, stains: StainMatrix = HED) -> np.ndarray:
    """Optical density (..., 3) -> stain concentrations (..., 3) in OD units."""
    return (od @ stains.inverse).astype(np.float32)


def concentrations_to_od(conc: np.ndarray, stains: StainMatrix = HED) -> np.ndarray:
    """Stain concentrations (..., 3) -> optical density (..., 3)."""
    return (np.asarray(conc, np.float32) @ stains.vectors.astype(np.float32)).astype(np.float32)


def rgb_to_concentrations(rgb: np.ndarray, stains: StainMatrix = HED) -> np.ndarray:
    """Colour deconvolution: RGB (..., 3) -> concentrations (..., 3)."""
    return od_to_concentrations(rgb_to_od(rgb), stains)


def concentrations_to_rgb(conc: np.ndarray, stains: StainMatrix = HED) -> np.ndarray:
    """Render concentrations (..., 3) to RGB uint8 by Beer-Lambert."""
    return od_to_rgb(concentrations_to_od(conc, stains))
