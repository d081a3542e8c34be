"""Scores of a virtual IHC against a reference: pixels, DAB, positive cells, differences.

FID, KID and LPIPS are computed only when their packages and weights are present here
(see `vstain.metrics.learned`); otherwise they are reported as unavailable, with the reason.
"""

from vstain.metrics.cells import Detection, match_objects, positive_cells
from vstain.metrics.difference import colour_difference, dab_difference
from vstain.metrics.image import PSNR_CAP, dab_correlation, psnr, ssim
from vstain.metrics.learned import frechet_distance, kernel_inception_distance, unavailable
from vstain.metrics.positivity import positivity_error

__all__ = [
    "PSNR_CAP",
    "Detection",
    "colour_difference",
    "dab_correlation",
    "dab_difference",
    "frechet_distance",
    "kernel_inception_distance",
    "match_objects",
    "positive_cells",
    "positivity_error",
    "psnr",
    "ssim",
    "unavailable",
]
