"""Stain optics: optical density, colour deconvolution, DAB masks, positivity."""

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

__all__ = [
    "HED",
    "StainMatrix",
    "concentrations_to_od",
    "concentrations_to_rgb",
    "od_to_concentrations",
    "od_to_rgb",
    "rgb_to_concentrations",
    "rgb_to_od",
]
