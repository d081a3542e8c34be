"""Difference maps of a virtual IHC against the real one: signed DAB and CIEDE2000 colour."""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from vstain.color import dab_od
from vstain.metrics.image import rgb_pair


def dab_difference(virtual: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Signed DAB optical density virtual - real, (H, W) float32: > 0 where virtual is browner."""
    virtual, real = rgb_pair(virtual, real)
    return (dab_od(virtual) - dab_od(real)).astype(np.float32)


def colour_difference(virtual: np.ndarray, real: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference per pixel, (H, W) float32 (about 2.3 is just noticeable)."""
    virtual, real = rgb_pair(virtual, real)
    return deltaE_ciede2000(rgb2lab(virtual), rgb2lab(real)).astype(np.float32)
