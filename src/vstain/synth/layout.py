"""Slide-scale layout: a few irregular tissue pieces on glass.

Each piece is an ellipse with a wobbly outline; the tissue field is the largest ``1 - radius`` over
pieces plus fractal edge noise, minus a threshold chosen so that tissue covers a target fraction of
the slide. Positive field means tissue. Positions are in micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vstain.synth.hashing import stream_key
from vstain.synth.noise import (
    GridSampler,
    LatticeFn,
    PointSampler,
    evaluate,
    fractal_lattice,
    smoothstep,
)

#: Amplitude of the edge noise in units of the normalised piece radius.
EDGE_AMPLITUDE = 0.1
#: Edge noise runs from at most this spacing (micrometres) down to ``FINEST_EDGE_UM``; the shape
#: at larger scales comes from the pieces' outlines.
COARSEST_EDGE_UM = 150.0
FINEST_EDGE_UM = 12.0
#: Harmonics 2.. of the outline wobble.
WOBBLE_HARMONICS = 4
#: Tissue fades out within this fraction of the slide's shorter side from its borders.
BORDER_MARGIN = 0.04
#: Spacing of the lattice the tissue field is sampled on before B-spline smoothing.
TISSUE_LATTICE_UM = 4.0


@dataclass(frozen=True)
class Piece:
    """One tissue piece: centre, semi-axes (micrometres), angle (radians), outline wobble."""

    x: float
    y: float
    rx: float
    ry: float
    angle: float
    wobble: tuple[float, ...]  # cos and sin amplitude of harmonics 2, 3, ...


@dataclass(frozen=True)
class Layout:
    """Tissue pieces, the threshold of the tissue field and the scale of edge noise."""

    pieces: tuple[Piece, ...]
    threshold: float
    edge_spacing_um: float
    edge_octaves: int
    width_um: float  # the slide: tissue keeps off its borders
    height_um: float


def _piece_field(piece: Piece, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``1 - r`` of one piece, r its normalised radius with wobble; broadcasts x against y."""
    c, s = np.float32(np.cos(piece.angle)), np.float32(np.sin(piece.angle))
    dx = (x - piece.x).astype(np.float32)
    dy = (y - piece.y).astype(np.float32)
    u = (dx * c + dy * s) / np.float32(piece.rx)
    v = (-dx * s + dy * c) / np.float32(piece.ry)
    r = np.sqrt(u * u + v * v)
    z = (u + np.complex64(1j) * v) / np.maximum(r, np.float32(1e-9))
    zk = z
    scale = np.ones_like(r)
    for k in range(WOBBLE_HARMONICS):
        zk = zk * z
        scale += np.float32(piece.wobble[2 * k]) * zk.real
        scale += np.float32(piece.wobble[2 * k + 1]) * zk.imag
    return 1 - r / scale


def _lattice(layout: Layout, seed: int) -> LatticeFn:
    """Tissue field at the points of a ``TISSUE_LATTICE_UM`` lattice."""
    edge, edge_spacing = fractal_lattice(
        stream_key(seed, "tissue-edge"), layout.edge_spacing_um, layout.edge_octaves
    )

    def values(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        x, y = gx * TISSUE_LATTICE_UM, gy * TISSUE_LATTICE_UM
        pieces = np.max(
            np.stack(np.broadcast_arrays(*(_piece_field(p, x, y) for p in layout.pieces))), axis=0
        )
        edges = evaluate(edge, x, y, edge_spacing)
        to_border = np.minimum(
            np.minimum(x, layout.width_um - x), np.minimum(y, layout.height_um - y)
        )
        margin = BORDER_MARGIN * min(layout.width_um, layout.height_um)
        border = 2 * (1 - smoothstep(0.0, margin, to_border)).astype(np.float32)
        return pieces + np.float32(EDGE_AMPLITUDE) * edges - np.float32(layout.threshold) - border

    return values


def tissue_field(layout: Layout, at: GridSampler | PointSampler) -> np.ndarray:
    """Tissue field (float32, > 0 on tissue) of the slide ``at.seed`` on a grid or at points: a
    B-spline through its values on a fine lattice, so it costs one pass over the pixels."""
    return at.field(_lattice(layout, at.seed), TISSUE_LATTICE_UM)


def _pieces(
    rng: np.random.Generator, width_um: float, height_um: float, fraction: float
) -> tuple[Piece, ...]:
    """Two to four pieces, each filling about ``fraction`` of one cell of a coarse grid."""
    n = int(rng.integers(2, 5))
    # The grid of n cells whose cells are closest to square.
    rows = min(
        (r for r in range(1, n + 1) if n % r == 0),
        key=lambda r: abs(np.log(width_um * r / (height_um * (n // r)))),
    )
    cols = n // rows
    cw, ch = width_um / cols, height_um / rows
    # Semi-axes k * (cw/2, ch/2): the pieces together cover ``fraction`` of the slide.
    k = min(float(np.sqrt(4 * fraction * width_um * height_um / (n * np.pi * cw * ch))), 0.95)
    pieces = []
    for cell in range(n):
        r, c = divmod(cell, cols)
        stretch = rng.uniform(0.85, 1.15)
        wobble = rng.normal(0.0, 0.08, 2 * WOBBLE_HARMONICS) / np.repeat(
            np.arange(2, 2 + WOBBLE_HARMONICS), 2
        )
        pieces.append(
            Piece(
                x=float((c + 0.5 + rng.uniform(-0.05, 0.05)) * cw),
                y=float((r + 0.5 + rng.uniform(-0.05, 0.05)) * ch),
                rx=float(k * cw / 2 * stretch),
                ry=float(k * ch / 2 / stretch),
                angle=float(rng.uniform(-0.3, 0.3)),
                wobble=tuple(float(w) for w in wobble),
            )
        )
    return tuple(pieces)


def make_layout(seed: int, width_um: float, height_um: float, fraction: float) -> Layout:
    """Pieces for a slide of the given size, thresholded so tissue covers ``fraction`` of it."""
    rng = np.random.default_rng(stream_key(seed, "layout"))
    pieces = _pieces(rng, width_um, height_um, fraction)
    mean_radius = float(np.mean([(p.rx + p.ry) / 2 for p in pieces]))
    spacing = min(mean_radius / 2.0, COARSEST_EDGE_UM)
    octaves = max(1, int(np.floor(np.log2(spacing / FINEST_EDGE_UM))) + 1)
    # The threshold is the (1 - fraction) quantile of the field on a 256 x 256 grid of the slide.
    draft = Layout(pieces, 0.0, spacing, octaves, width_um, height_um)
    xs = (np.arange(256) + 0.5) * width_um / 256
    ys = (np.arange(256) + 0.5) * height_um / 256
    field = tissue_field(draft, PointSampler(seed, xs[None, :], ys[:, None]))
    threshold = float(np.quantile(field, 1.0 - fraction))
    return Layout(pieces, threshold, spacing, octaves, width_um, height_um)
