"""Glands (colonic crypts in cross-section): a ring of columnar cells around a pale lumen.

Each block of a ``GLAND_BLOCK_UM`` grid holds at most one gland, entirely inside the block, drawn
from a generator seeded by the block's coordinates. The ring is split into cell sectors; each cell
has a basal nucleus elongated across the ring; 45% are goblet cells with an apical mucin
vacuole. Geometry is in micrometres in the slide frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vstain.synth.anatomy import GLAND_BLOCK_UM, in_mucosa
from vstain.synth.hashing import hash_coords, stream_key
from vstain.synth.layout import Layout, tissue_field
from vstain.synth.noise import PointSampler

#: Most cells one gland can have (sizes cells' id ranges).
MAX_GLAND_CELLS = 64
#: Gap between a gland's outline and its block's edge.
BLOCK_GAP_UM = 4.0
#: Tissue field a gland's centre must exceed (keeps glands off the tissue edge).
TISSUE_MARGIN = 0.05
HARMONICS = 4  # outline harmonics 2..5


@dataclass(frozen=True)
class Gland:
    """One gland: outline, epithelium, cell sectors and the nuclei of its cells."""

    block: tuple[int, int]
    x: float
    y: float
    radius: float
    aspect: float
    angle: float
    harmonics: np.ndarray  # (HARMONICS, 2) cos and sin amplitudes of harmonics 2..
    thickness: float  # height of the epithelium
    bounds: np.ndarray  # (n + 1,) sector boundary angles in the gland frame, last = first + 2 pi
    goblet: np.ndarray  # (n,) bool
    ki67_rate: float
    # Nuclei, one per cell: distance from the centre, semi-axis along the radius, along the ring
    nucleus_rho: np.ndarray
    nucleus_a: np.ndarray
    nucleus_b: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.goblet)

    @property
    def mid_angles(self) -> np.ndarray:
        return (self.bounds[:-1] + self.bounds[1:]) / 2

    @property
    def reach(self) -> float:
        """No part of the gland lies farther than this from its centre."""
        outline = self.radius * np.sqrt(self.aspect) * (1 + np.abs(self.harmonics).sum())
        return outline + 1.5  # the basement membrane lies just outside the outline

    def outer_radius(self, cos_phi: np.ndarray, sin_phi: np.ndarray) -> np.ndarray:
        """Radius of the outline (basement membrane) in the direction (cos, sin), gland frame."""
        return _outline(self.radius, self.aspect, self.harmonics, cos_phi, sin_phi)

    def to_gland_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.x, y - self.y
        return dx * c + dy * s, -dx * s + dy * c

    def nucleus_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Slide-frame centres of the nuclei."""
        phi = self.mid_angles
        u, v = self.nucleus_rho * np.cos(phi), self.nucleus_rho * np.sin(phi)
        c, s = np.cos(self.angle), np.sin(self.angle)
        return self.x + u * c - v * s, self.y + u * s + v * c


def _outline(
    radius: float, aspect: float, harmonics: np.ndarray, cos_phi: np.ndarray, sin_phi: np.ndarray
) -> np.ndarray:
    e = 1.0 / np.sqrt(cos_phi**2 / aspect + sin_phi**2 * aspect)
    z = cos_phi + 1j * sin_phi
    zk, wobble = z, np.ones_like(cos_phi)
    for c, s in harmonics:
        zk = zk * z
        wobble += c * zk.real + s * zk.imag
    return radius * e * wobble


def _draw(rng: np.random.Generator, bx: int, by: int) -> Gland:
    """A gland inside block (bx, by), with its cells' sectors and nuclei."""
    half = GLAND_BLOCK_UM / 2 - BLOCK_GAP_UM
    aspect = rng.uniform(1.0, 1.5)
    harmonics = rng.normal(0.0, 0.035, (HARMONICS, 2)) / np.arange(2, 2 + HARMONICS)[:, None]
    stretch = np.sqrt(aspect) * (1 + np.abs(harmonics).sum())
    radius = min(rng.uniform(25.0, 36.0), 0.97 * half / stretch)
    slack = half - radius * stretch
    thickness = min(rng.uniform(17.0, 23.0), radius - 4.0)
    # Cell sectors: about 6 um wide at mid-height; goblet cells are wider.
    mid = radius - thickness / 2
    n = int(np.clip(round(2 * np.pi * mid / rng.uniform(5.5, 6.5)), 12, MAX_GLAND_CELLS))
    goblet = rng.random(n) < 0.45
    widths = rng.uniform(0.8, 1.2, n) * np.where(goblet, 1.4, 1.0)
    start = rng.uniform(0, 2 * np.pi)
    bounds = start + 2 * np.pi * np.concatenate([[0.0], np.cumsum(widths)]) / widths.sum()
    # Basal nuclei, elongated across the ring, a little pseudostratified; goblet nuclei flatter.
    phi = (bounds[:-1] + bounds[1:]) / 2
    outer = _outline(radius, aspect, harmonics, np.cos(phi), np.sin(phi))
    a = rng.uniform(3.4, 4.8, n) * np.where(goblet, 0.75, 1.0)
    lift = np.where(goblet, 0.0, rng.uniform(0.0, 2.5, n))
    rho = np.maximum(outer - 1.2 - a - lift, outer - thickness + a + 1.5)
    b = np.minimum(rng.uniform(1.8, 2.5, n), 0.4 * rho * (bounds[1:] - bounds[:-1]))
    return Gland(
        block=(bx, by),
        x=(bx + 0.5) * GLAND_BLOCK_UM + rng.uniform(-slack, slack),
        y=(by + 0.5) * GLAND_BLOCK_UM + rng.uniform(-slack, slack),
        radius=radius,
        aspect=aspect,
        angle=rng.uniform(0, np.pi),
        harmonics=harmonics,
        thickness=thickness,
        bounds=bounds,
        goblet=goblet,
        ki67_rate=rng.uniform(0.15, 0.6),
        nucleus_rho=rho,
        nucleus_a=a,
        nucleus_b=b,
    )


def glands_near(
    seed: int, layout: Layout, x0: float, y0: float, x1: float, y1: float
) -> list[Gland]:
    """Glands that reach into the box [x0, x1) x [y0, y1) (micrometres)."""
    bx = np.arange(np.floor(x0 / GLAND_BLOCK_UM), np.floor(x1 / GLAND_BLOCK_UM) + 1, dtype=np.int64)
    by = np.arange(np.floor(y0 / GLAND_BLOCK_UM), np.floor(y1 / GLAND_BLOCK_UM) + 1, dtype=np.int64)
    bxx, byy = (a.ravel() for a in np.meshgrid(bx, by))
    centres = PointSampler(seed, (bxx + 0.5) * GLAND_BLOCK_UM, (byy + 0.5) * GLAND_BLOCK_UM)
    present = in_mucosa(centres)
    present &= tissue_field(layout, centres) > TISSUE_MARGIN
    key = stream_key(seed, "gland")
    seeds = hash_coords(key, bxx[present], byy[present])
    glands = []
    for i, j, s in zip(bxx[present], byy[present], seeds, strict=True):
        rng = np.random.default_rng(int(s))
        if rng.random() < 0.93:  # a few blocks of mucosa have no crypt in the plane of section
            gland = _draw(rng, int(i), int(j))
            if (
                gland.x + gland.reach > x0
                and gland.x - gland.reach < x1
                and gland.y + gland.reach > y0
                and gland.y - gland.reach < y1
            ):
                glands.append(gland)
    return glands
