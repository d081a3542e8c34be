"""Scores of a virtual IHC against a reference: pixels, DAB, positive cells, differences.

FID, KID and LPIPS need network weights that cannot be downloaded here; `unavailable` reports
them as such instead of inventing a number.
"""

from vstain.metrics.cells import Detection, match_objects
from vstain.metrics.difference import colour_difference, dab_difference, positivity_error
from vstain.metrics.image import PSNR_CAP, dab_correlation, psnr, ssim


def unavailable(name: str, reason: str) -> dict:
    """The report of a metric that cannot be computed here, with the reason."""
    return {"metric": name, "available": False, "reason": reason}


__all__ = [
    "PSNR_CAP",
    "Detection",
    "colour_difference",
    "dab_correlation",
    "dab_difference",
    "match_objects",
    "positivity_error",
    "psnr",
    "ssim",
    "unavailable",
]
