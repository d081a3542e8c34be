"""Real vs virtual IHC: difference and discordance maps, positivity panels, region pairs."""

from vstain.review.maps import (
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
    "BOTH",
    "REAL_ONLY",
    "VIRTUAL_ONLY",
    "PositivityComparison",
    "RegionPair",
    "compare_positivity",
    "difference_map",
    "discordance",
    "region_pair",
]
