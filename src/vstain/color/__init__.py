"""Stain optics: optical density, colour deconvolution, DAB masks, positivity, stain
normalisation."""

from vstain.color.dab import dab_od
from vstain.color.dab_mask import (
    DabStats,
    coarse_dab_mask,
    dab_threshold_stats,
    signed_distance,
    split_touching,
)
from vstain.color.optics import (
    HED,
    StainMatrix,
    concentrations_to_od,
    concentrations_to_rgb,
    od_to_concentrations,
    od_to_rgb,
    rgb_to_concentrations,
    rgb_to_od,
)
from vstain.color.positivity import QUPATH_THRESHOLDS, Positivity, positivity
from vstain.color.stain_estimation import estimate_stains
from vstain.color.stain_normalisation import (
    Normaliser,
    slide_stain_statistics,
    stain_reference,
    stain_statistics,
)
from vstain.errors import StainError

__all__ = [
    "HED",
    "QUPATH_THRESHOLDS",
    "DabStats",
    "Normaliser",
    "Positivity",
    "StainError",
    "StainMatrix",
    "coarse_dab_mask",
    "concentrations_to_od",
    "concentrations_to_rgb",
    "dab_od",
    "dab_threshold_stats",
    "estimate_stains",
    "od_to_concentrations",
    "od_to_rgb",
    "positivity",
    "rgb_to_concentrations",
    "rgb_to_od",
    "signed_distance",
    "slide_stain_statistics",
    "split_touching",
    "stain_reference",
    "stain_statistics",
]
