"""Registration of an adjacent-section IHC slide to its H&E, and the region views that use it."""

from vstain.register.field import DisplacementField
from vstain.register.registration import (
    AGREEMENT_OK,
    QUALITY_OK,
    Registration,
    RegistrationError,
    register,
)
from vstain.register.review import (
    BOTH,
    REAL_ONLY,
    VIRTUAL_ONLY,
    PositivityComparison,
    RegionPair,
    compare_positivity,
    difference_map,
    discordance,
    region_pair,
)

__all__ = [
    "AGREEMENT_OK",
    "BOTH",
    "QUALITY_OK",
    "REAL_ONLY",
    "VIRTUAL_ONLY",
    "DisplacementField",
    "PositivityComparison",
    "RegionPair",
    "Registration",
    "RegistrationError",
    "compare_positivity",
    "difference_map",
    "discordance",
    "region_pair",
    "register",
]
