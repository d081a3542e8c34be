"""Stain augmentation in HED space: scale and shift stain concentrations, then re-render."""

from __future__ import annotations

import numpy as np

from vstain.color.optics import HED, StainMatrix, concentrations_to_rgb, rgb_to_concentrations
from vstain.color.pixels import check_rgb


def perturb_stains(
    rgb: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    stains: StainMatrix = HED,
) -> np.ndarray:
    """Re-render ``rgb`` with each stain concentration ``c`` replaced by ``c * scale + shift``.

    ``scale`` and ``shift`` hold one value per stain of ``stains`` (shift in OD units); scale 1
    and shift 0 leave that stain as it is. Returns RGB uint8.
    """
    conc = rgb_to_concentrations(check_rgb(rgb), stains)
    conc = conc * np.asarray(scale, np.float32) + np.asarray(shift, np.float32)
    return concentrations_to_rgb(conc, stains)


def random_he_perturbation(
    rng: np.random.Generator, max_scale: float = 0.05, max_shift: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and shift for ``perturb_stains`` with ``HED``: H and E jittered, DAB unchanged.

    Scales are uniform in ``1 +- max_scale``, shifts uniform in ``+- max_shift`` OD.
    """
    scale = np.array([*rng.uniform(1 - max_scale, 1 + max_scale, 2), 1.0])
    shift = np.array([*rng.uniform(-max_shift, max_shift, 2), 0.0])
    return scale, shift
