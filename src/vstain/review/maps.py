"""What the Compare view shows for a region of the H&E: real IHC brought onto it, the signed DAB
difference, a discordance label map and the positivity of both stains.

Regions are (x, y, w, h) in pixels of one level of the virtual IHC, which shares the H&E's
geometry; the real IHC is resampled onto them through a `Registration`, tile by tile.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vstain.color import QUPATH_THRESHOLDS, DabStats, Positivity, coarse_dab_mask, dab_od
from vstain.color import positivity as score_positivity
from vstain.color.pixels import check_mask
from vstain.io.slide import Slide
from vstain.metrics.difference import dab_difference
from vstain.registration.registration import Registration
from vstain.tiles.tissue import tissue_mask

#: Discordance labels: 0 neither (or no real IHC), then these.
VIRTUAL_ONLY, REAL_ONLY, BOTH = 1, 2, 3


@dataclass(frozen=True)
class RegionPair:
    """Virtual and real IHC of one H&E region, (h, w, 3) uint8, and where the real one reaches."""

    virtual: np.ndarray
    real: np.ndarray
    covered: np.ndarray  # (h, w) bool


def region_pair(
    reg: Registration, virtual: Slide, ihc: Slide, x: int, y: int, w: int, h: int, level: int = 0
) -> RegionPair:
    """Read the virtual IHC region at ``level`` and the real IHC warped onto it."""
    real, covered = reg.warp_ihc_region(ihc, x, y, w, h, virtual.downsamples[level])
    return RegionPair(virtual.read_region(x, y, w, h, level), real, covered)


def difference_map(pair: RegionPair) -> np.ndarray:
    """Signed DAB OD difference virtual - real, (h, w) float32; NaN where there is no real IHC."""
    diff = dab_difference(pair.virtual, pair.real)
    return np.where(pair.covered, diff, np.float32(np.nan)).astype(np.float32)


def tissue(pair: RegionPair) -> np.ndarray:
    """Pixels that are tissue in either stain and covered by the real IHC, (h, w) bool."""
    return pair.covered & (tissue_mask(pair.virtual) | tissue_mask(pair.real))


def discordance(
    pair: RegionPair,
    *,
    threshold: float = QUPATH_THRESHOLDS[0],
    virtual_stats: DabStats | None = None,
    real_stats: DabStats | None = None,
    k: float = 2.0,
) -> np.ndarray:
    """Labels (h, w) uint8: ``VIRTUAL_ONLY``, ``REAL_ONLY``, ``BOTH`` DAB-positive, else 0.

    Positive is DAB OD above ``threshold`` (QuPath's 1+ by default), cleaned like
    `coarse_dab_mask`; give a stain's slide-wide ``DabStats`` (``dab_threshold_stats``) to
    threshold it at ``mean + k * std`` instead. A fixed or slide-wide threshold keeps tiles
    consistent with each other.
    """
    region = tissue(pair)
    fixed = DabStats(threshold, 0.0)
    v = coarse_dab_mask(pair.virtual, stats=virtual_stats or fixed, k=k, mask=region)
    r = coarse_dab_mask(pair.real, stats=real_stats or fixed, k=k, mask=region)
    return (v.astype(np.uint8) * VIRTUAL_ONLY + r.astype(np.uint8) * REAL_ONLY).astype(np.uint8)


@dataclass(frozen=True)
class PositivityComparison:
    """Pixel positivity (QuPath classes on DAB OD) of the virtual and the real IHC of a region."""

    virtual: Positivity
    real: Positivity

    def rows(self) -> list[dict[str, float | str]]:
        """One row per stain plus their difference (virtual - real), for a table or CSV."""
        rows = [_row(name, p) for name, p in (("virtual", self.virtual), ("real", self.real))]
        rows.append({k: v if k == "stain" else v - rows[1][k] for k, v in rows[0].items()})
        rows[-1]["stain"] = "virtual - real"
        return rows

    def write_csv(self, path: str | Path) -> None:
        """Write ``rows()`` as CSV."""
        rows = self.rows()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _row(name: str, p: Positivity) -> dict[str, float | str]:
    t1, t2, t3 = p.thresholds
    counts = dict(
        zip(("negative", f"1+ ({t1})", f"2+ ({t2})", f"3+ ({t3})"), p.counts, strict=True)
    )
    return {
        "stain": name,
        "pixels": p.total,
        **counts,
        "percent_positive": p.percent_positive,
        "h_score": p.h_score,
    }


def compare_positivity(
    pair: RegionPair,
    mask: np.ndarray | None = None,
    thresholds: tuple[float, float, float] = QUPATH_THRESHOLDS,
) -> PositivityComparison:
    """Positivity of both stains over ``mask`` (default: `tissue`), always within coverage."""
    region = tissue(pair) if mask is None else pair.covered & check_mask(mask, pair.covered.shape)
    return PositivityComparison(
        *(
            score_positivity(dab_od(rgb), mask=region, thresholds=thresholds)
            for rgb in (pair.virtual, pair.real)
        )
    )
