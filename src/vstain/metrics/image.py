"""Pixel metrics of a virtual IHC against a reference IHC: PSNR, SSIM, DAB correlation."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vstain.color import dab_od
from vstain.errors import StainError

#: PSNR of identical images is infinite; it is reported as this cap (dB) so means stay finite.
PSNR_CAP = 100.0


def rgb_pair(virtual: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as arrays, or a VstainError when they are not uint8 RGB of one shape."""
    virtual, real = np.asarray(virtual), np.asarray(real)
    if virtual.shape != real.shape or virtual.ndim != 3 or virtual.shape[-1] != 3:
        raise StainError(
            f"Images to compare must be RGB of one shape (H, W, 3); got "
            f"{virtual.shape} and {real.shape}. Crop or register them first."
        )
    if virtual.dtype != np.uint8 or real.dtype != np.uint8:
        raise StainError("Images to compare must be uint8 RGB (0-255).")
    return virtual, real


def psnr(virtual: np.ndarray, real: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (data range 255), capped at `PSNR_CAP`."""
    virtual, real = rgb_pair(virtual, real)
    if np.array_equal(virtual, real):
        return PSNR_CAP
    return min(float(peak_signal_noise_ratio(real, virtual, data_range=255)), PSNR_CAP)


def ssim(virtual: np.ndarray, real: np.ndarray) -> float:
    """Structural similarity over RGB (Gaussian window, as Wang et al.), data range 255."""
    virtual, real = rgb_pair(virtual, real)
    return float(
        structural_similarity(
            real,
            virtual,
            data_range=255,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def dab_correlation(virtual: np.ndarray, real: np.ndarray) -> float:
    """Pearson correlation of the DAB optical density maps (NaN when either is constant)."""
    virtual, real = rgb_pair(virtual, real)
    a, b = dab_od(virtual).ravel(), dab_od(real).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
