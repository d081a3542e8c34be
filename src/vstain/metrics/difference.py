"""Where a virtual IHC and the real one disagree: DAB difference, colour difference, positivity."""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from vstain.color import dab_od, positivity
from vstain.metrics.image import rgb_pair


def dab_difference(virtual: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Signed DAB optical density virtual - real, (H, W) float32: > 0 where virtual is browner."""
    virtual, real = rgb_pair(virtual, real)
    return (dab_od(virtual) - dab_od(real)).astype(np.float32)


def colour_difference(virtual: np.ndarray, real: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference per pixel (H, W) float32 (about 2.3 is just noticeable)."""
    virtual, real = rgb_pair(virtual, real)
    return deltaE_ciede2000(rgb2lab(virtual), rgb2lab(real)).astype(np.float32)


def positivity_error(
    virtual: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Pixel positivity (QuPath thresholds) of both and their differences, virtual - real."""
    virtual, real = rgb_pair(virtual, real)
    v, r = positivity(dab_od(virtual), mask=mask), positivity(dab_od(real), mask=mask)
    return {
        "percent_positive_virtual": v.percent_positive,
        "percent_positive_real": r.percent_positive,
        "percent_positive_error": v.percent_positive - r.percent_positive,
        "h_score_virtual": v.h_score,
        "h_score_real": r.h_score,
        "h_score_error": v.h_score - r.h_score,
    }
