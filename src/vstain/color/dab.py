"""DAB optical density of an IHC image."""

from __future__ import annotations

import numpy as np

from vstain.color.optics import HED, StainMatrix, rgb_to_concentrations
from vstain.color.pixels import check_rgb
from vstain.errors import StainError


def stain_index(stains: StainMatrix, name: str) -> int:
    """Position of the stain called ``name`` in ``stains``, or raise StainError."""
    if name not in stains.names:
        raise StainError(
            f"The stain matrix has no '{name}' vector (it has {', '.join(stains.names)}). "
            f"Use a matrix with a '{name}' stain, such as vstain.color.HED."
        )
    return stains.names.index(name)


def dab_od(rgb: np.ndarray, stains: StainMatrix = HED) -> np.ndarray:
    """DAB concentration of an RGB image in OD units, float32 of shape (H, W).

    Values are not clipped: unmixing noise makes unstained pixels slightly negative.
    """
    index = stain_index(stains, "dab")
    return rgb_to_concentrations(check_rgb(rgb), stains)[..., index]
