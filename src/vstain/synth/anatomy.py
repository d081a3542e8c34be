"""Tissue-scale fields: where mucosa and submucosa are, how cellular the stroma is, collagen fibres.

Modelled on colonic mucosa (the CK8/18 and CD3 data of the seed papers): crypts in a cellular
lamina propria (lymphocytes, plasma cells, a few fibroblasts), patches of denser submucosa-like
stroma with wavy collagen and spindle cells, and occasional lymphoid aggregates. All sizes are in
micrometres; every field is a function of position, evaluated on a grid or at points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vstain.synth.hashing import stream_key
from vstain.synth.noise import GridSampler, PointSampler, smoothstep

#: Side of the blocks that hold at most one gland (crypt spacing).
GLAND_BLOCK_UM = 100.0
#: Spacing of the lattice of stromal cell sites.
SITE_UM = 7.0
#: Mean spacing and width of collagen fibres.
FIBRE_PERIOD_UM = 4.5
#: Angle between the two fibre families.
FIBRE_CROSSING_DEG = 65.0

Sampler = GridSampler | PointSampler


def mucosa_weight(at: Sampler) -> np.ndarray:
    """1 in mucosa (crypts in lamina propria), 0 in submucosa-like stroma."""
    return smoothstep(-0.75, -0.35, at.noise("mucosa", 700.0, 2)).astype(np.float32)


def in_mucosa(at: Sampler) -> np.ndarray:
    """Where crypts may be (boolean)."""
    return mucosa_weight(at) > 0.5


@dataclass(frozen=True)
class SiteDensities:
    """Probability that a stromal site holds each kind of cell."""

    lymphocyte: np.ndarray
    plasma: np.ndarray
    fibroblast: np.ndarray


def site_densities(at: Sampler) -> SiteDensities:
    """Cell densities of the stroma at the sites' positions."""
    m = mucosa_weight(at)
    inflammation = at.noise("inflammation", 250.0, 2)
    aggregate = smoothstep(1.6, 2.3, at.noise("aggregate", 160.0, 1))
    lymph = m * np.maximum(0.21 + 0.07 * inflammation, 0.05) + (1 - m) * 0.04
    lymph = np.maximum(lymph, 0.85 * aggregate)
    plasma = m * np.maximum(0.17 + 0.04 * inflammation, 0.05) * (1 - aggregate)
    fibro = (m * 0.05 + (1 - m) * 0.12) * (1 - aggregate)
    return SiteDensities(
        lymph.astype(np.float32), plasma.astype(np.float32), fibro.astype(np.float32)
    )


def _fibre_angles(seed: int) -> tuple[float, float]:
    base = (stream_key(seed, "fibre-angle") % 3600) / 3600 * np.pi
    return base, base + np.deg2rad(FIBRE_CROSSING_DEG)


def _fibre_blend(at: Sampler) -> np.ndarray:
    """Weight of the first fibre family (the second has one minus it)."""
    return smoothstep(-0.6, 0.6, at.noise("fibre-blend", 150.0, 2))


def fibres(at: GridSampler) -> np.ndarray:
    """Collagen fibre density in [0, 1] on the grid: two families of wavy, broken lines."""
    w = _fibre_blend(at)
    presence = smoothstep(-0.4, 0.6, at.noise("fibre-presence", 9.0, 1))
    out = np.zeros(at.shape, np.float32)
    for k, angle in enumerate(_fibre_angles(at.seed)):
        # Phase along the family's normal, in periods; positions are reduced modulo one period
        # before the float32 sum so that precision does not depend on the distance from 0.
        along = np.mod(np.cos(angle) * at.xs, FIBRE_PERIOD_UM).astype(np.float32)[None, :]
        across = np.mod(np.sin(angle) * at.ys, FIBRE_PERIOD_UM).astype(np.float32)[:, None]
        warp = np.float32(10.0) * at.noise(f"fibre-warp-{k}", 45.0, 2)
        c = np.maximum(np.cos((along + across + warp) * np.float32(2 * np.pi / FIBRE_PERIOD_UM)), 0)
        c2 = c * c
        out += (w if k == 0 else 1 - w) * (c2 * c2 * c2)
    return out * presence


def fibre_direction(at: PointSampler, step: float = 0.5) -> np.ndarray:
    """Angle (radians) of the locally dominant fibre family at the points."""
    w = _fibre_blend(at)
    angles = []
    for k, angle in enumerate(_fibre_angles(at.seed)):

        def warp(dx, dy, k=k):
            shifted = PointSampler(at.seed, at.x + dx, at.y + dy)
            return 10.0 * shifted.noise(f"fibre-warp-{k}", 45.0, 2)

        gx = np.cos(angle) + (warp(step, 0) - warp(-step, 0)) / (2 * step)
        gy = np.sin(angle) + (warp(0, step) - warp(0, -step)) / (2 * step)
        angles.append(np.arctan2(gy, gx) + np.pi / 2)  # along the fibres, across the gradient
    return np.where(w >= 0.5, angles[0], angles[1])


def stroma_eosin(at: GridSampler) -> np.ndarray:
    """Eosin density of extracellular matrix: loose in mucosa, collagen-rich outside."""
    m = mucosa_weight(at)
    base = (0.22 * m + 0.26 * (1 - m)) * (1 + 0.2 * at.noise("stroma-density", 25.0, 2))
    strength = 0.04 * m + 0.4 * (1 - m)
    return (np.maximum(base, 0.03) + strength * fibres(at)).astype(np.float32)
