"""Paint one section of tissue over a pixel region: stain densities, labels and classes.

The result is stain-agnostic: hematoxylin-binding and eosin-binding densities (OD units at unit
stain gain) and the expression of the slide's marker (0-1), plus instance labels of nuclei and
cells and a pixel class map. `render` turns it into H&E and IHC images.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from vstain.synth.anatomy import stroma_eosin
from vstain.synth.cells import STROMA_REACH_UM, Cells, IdSpace, Kind, gland_cells, stroma_cells
from vstain.synth.glands import GLAND_BLOCK_UM, Gland, glands_near
from vstain.synth.layout import tissue_field
from vstain.synth.noise import GridSampler, smoothstep
from vstain.synth.spec import SlideSpec
from vstain.synth.stamps import Ellipses, rasterise


class PixelClass(IntEnum):
    """What a pixel shows."""

    GLASS = 0
    STROMA = 1  # extracellular matrix and fibroblasts
    EPITHELIUM = 2
    LUMEN = 3
    LYMPHOCYTE = 4
    PLASMA = 5


@dataclass(frozen=True)
class Fields:
    """One section painted over a region (all maps (h, w))."""

    chromatin: np.ndarray  # hematoxylin bound by nuclei, float32
    basophil: np.ndarray  # hematoxylin bound elsewhere (cytoplasm, mucin, matrix), float32
    eosin: np.ndarray  # eosin-binding density, float32
    expression: np.ndarray  # expression of the slide's marker, float32 in about 0-1.5
    nuclei: np.ndarray  # int32 nucleus instance labels (cell ids)
    cells: np.ndarray  # int32 cell labels (cell ids) where a cell's extent is defined
    pixel_class: np.ndarray  # uint8 PixelClass
    table: Cells  # every cell near the region, in either section


# Densities (OD at unit gain) of the parts of the tissue.
_EOSIN = {
    "epithelium": 0.27,
    "apical": 0.12,
    "membrane": 0.04,
    "basement": 0.12,
    "mucin": 0.06,
    "lumen": 0.03,
    "nucleus": 0.1,
    "lymphocyte": 0.17,
    "plasma": 0.25,
}
_HEMA = {
    "stroma": 0.06,
    "epithelium": 0.14,
    "mucin": 0.16,
    "lumen": 0.02,
    "lymphocyte": 0.1,
    "plasma": 0.2,
}
#: Relative amplitude of fine (0.6 um) grain in all eosin staining.
_EOSIN_GRAIN = 0.15
#: Chromatin texture amplitude per kind of nucleus.
_TEXTURE = {Kind.EPITHELIAL: 0.35, Kind.FIBROBLAST: 0.15, Kind.LYMPHOCYTE: 0.15, Kind.PLASMA: 0.4}


def id_space(spec: SlideSpec) -> IdSpace:
    """The cell ids of a slide."""
    return IdSpace.for_slide(*spec.size_um, GLAND_BLOCK_UM)


def compose(spec: SlideSpec, section: str, x0: int, y0: int, w: int, h: int) -> Fields:
    """Paint section ``"a"`` (the H&E one) or ``"b"`` (the IHC one) over a pixel region."""
    ps = spec.pixel_size
    grid = GridSampler(spec.seed, (x0 + np.arange(w)) * ps, (y0 + np.arange(h)) * ps)
    tissue = tissue_field(spec.layout, grid) > 0
    box = (grid.xs[0], grid.ys[0], grid.xs[-1] + ps, grid.ys[-1] + ps)
    wide = (
        box[0] - STROMA_REACH_UM,
        box[1] - STROMA_REACH_UM,
        box[2] + STROMA_REACH_UM,
        box[3] + STROMA_REACH_UM,
    )
    sectioning = spec.sectioning if spec.mode == "adjacent-section" else None
    space = id_space(spec)
    glands = glands_near(spec.seed, spec.layout, *wide)
    table = Cells.concat(
        [
            gland_cells(spec.seed, glands, space, sectioning),
            stroma_cells(spec.seed, spec.layout, glands, space, wide, sectioning),
        ]
    )
    present = table.take(table.in_a if section == "a" else table.in_b)

    f = _Canvas.empty(h, w)
    f.pixel_class[tissue] = PixelClass.STROMA
    f.eosin[tissue] = stroma_eosin(grid)[tissue]
    f.basophil[tissue] = _HEMA["stroma"]
    fine = grid.noise("chromatin", 0.9)
    for gland in glands:
        _paint_gland(f, gland, space.gland_first_id(*gland.block), table, grid, spec.marker, fine)
    _paint_bodies(f, present, spec, x0, y0)
    _paint_nuclei(f, present, spec, x0, y0, fine)
    f.eosin *= 1 + _EOSIN_GRAIN * grid.noise("grain", 0.6)  # cytoplasmic and fibrillar grain
    for name in ("chromatin", "basophil", "eosin", "expression"):
        getattr(f, name)[~tissue] = 0.0
    f.pixel_class[~tissue] = PixelClass.GLASS
    f.nuclei[~tissue] = 0
    f.cells[~tissue] = 0
    return Fields(
        f.chromatin, f.basophil, f.eosin, f.expression, f.nuclei, f.cells, f.pixel_class, table
    )


@dataclass
class _Canvas:
    chromatin: np.ndarray
    basophil: np.ndarray
    eosin: np.ndarray
    expression: np.ndarray
    nuclei: np.ndarray
    cells: np.ndarray
    pixel_class: np.ndarray

    @classmethod
    def empty(cls, h: int, w: int) -> _Canvas:
        def zeros():
            return np.zeros((h, w), np.float32)

        return cls(
            zeros(),
            zeros(),
            zeros(),
            zeros(),
            np.zeros((h, w), np.int32),
            np.zeros((h, w), np.int32),
            np.zeros((h, w), np.uint8),
        )


@dataclass(frozen=True)
class _GlandPixels:
    """The pixels of one gland within its box of the region."""

    box: tuple[slice, slice]
    lumen: np.ndarray  # masks over the box
    basement: np.ndarray
    epithelium: np.ndarray
    # One value per epithelial pixel, in the order of the mask's nonzero elements:
    cell: np.ndarray  # index of the gland cell the pixel belongs to
    membrane: np.ndarray  # distance to the nearest cell boundary along the ring (um)
    depth: np.ndarray  # distance from the apical (lumen) surface (um)
    mucin: np.ndarray  # inside a goblet cell's mucin vacuole


def _gland_pixels(g: Gland, grid: GridSampler, tissue: np.ndarray) -> _GlandPixels | None:
    cols = np.flatnonzero(np.abs(grid.xs - g.x) <= g.reach)
    rows = np.flatnonzero(np.abs(grid.ys - g.y) <= g.reach)
    if not (cols.size and rows.size):
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    u, v = g.to_gland_frame(grid.xs[box[1]][None, :], grid.ys[box[0]][:, None])
    rho = np.maximum(np.hypot(u, v), 1e-9)
    outer = g.outer_radius(u / rho, v / rho)
    inner = outer - g.thickness
    tissue = tissue[box]
    epi = (rho >= inner) & (rho < outer) & tissue
    # Cell sectors, membranes and mucin only where there is epithelium.
    u, v, rho_e, inner_e = u[epi], v[epi], rho[epi], inner[epi]
    phi = g.bounds[0] + np.mod(np.arctan2(v, u) - g.bounds[0], 2 * np.pi)
    k = np.clip(np.searchsorted(g.bounds, phi, side="right") - 1, 0, g.n_cells - 1)
    mucin, owner = _goblet_vacuoles(g, k, phi, rho_e, inner_e)
    return _GlandPixels(
        box=box,
        lumen=(rho < inner) & tissue,
        basement=(rho >= outer) & (rho < outer + 1.2) & tissue,
        epithelium=epi,
        cell=owner,
        membrane=np.minimum(phi - g.bounds[k], g.bounds[k + 1] - phi) * rho_e,
        depth=rho_e - inner_e,
        mucin=mucin,
    )


def _paint_gland(
    f: _Canvas,
    g: Gland,
    first_id: int,
    table: Cells,
    grid: GridSampler,
    marker: str,
    fine: np.ndarray,
) -> None:
    p = _gland_pixels(g, grid, f.pixel_class != PixelClass.GLASS)
    if p is None:
        return
    box, epi, mucin = p.box, p.epithelium, p.mucin
    eosin, basophil = f.eosin[box], f.basophil[box]
    mucus = np.maximum(
        GridSampler(grid.seed, grid.xs[box[1]], grid.ys[box[0]]).noise("mucus", 2.0), 0
    )
    grain = fine[box][epi]
    cytoplasm = (
        _EOSIN["epithelium"] * (1 + 0.12 * grain)
        + _EOSIN["apical"] * np.exp(-((p.depth / 0.8) ** 2))  # brush border
        + _EOSIN["membrane"] * np.exp(-((p.membrane / 0.5) ** 2))
    )
    eosin[epi] = np.where(mucin, _EOSIN["mucin"], cytoplasm)
    basophil[epi] = np.where(mucin, _HEMA["mucin"] * (0.6 + 0.4 * mucus[epi]), _HEMA["epithelium"])
    eosin[p.basement] += _EOSIN["basement"]
    eosin[p.lumen] = _EOSIN["lumen"] * (1 + mucus[p.lumen])
    basophil[p.lumen] = _HEMA["lumen"] * (1 + mucus[p.lumen])
    f.pixel_class[box][p.lumen] = PixelClass.LUMEN
    f.pixel_class[box][epi] = PixelClass.EPITHELIUM
    f.cells[box][epi] = first_id + p.cell
    if marker == "ck818":
        # Cytoplasm with membrane and apical accentuation; the mucin vacuole stays unstained.
        level = table.level[_lookup(table, first_id + np.arange(g.n_cells))][p.cell]
        ck = 0.6 + 0.5 * np.exp(-((p.membrane / 0.7) ** 2)) + 0.35 * np.exp(-((p.depth / 1.5) ** 2))
        f.expression[box][epi] = np.where(mucin, 0.05, ck * (1 + 0.15 * grain)) * level


def _goblet_vacuoles(
    g: Gland, k: np.ndarray, phi: np.ndarray, rho: np.ndarray, inner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mucin vacuoles of goblet cells: round, between the apical surface and the nucleus, wider
    than the cell's sector (they bulge into the neighbours). Returns the mask and the owner cell
    of each pixel (its sector's cell, or the neighbouring goblet cell whose vacuole covers it)."""
    mucin = np.zeros(k.shape, bool)
    owner = k.copy()
    for step in (0, -1, 1):
        c = (k + step) % g.n_cells
        top = g.nucleus_rho[c] - g.nucleus_a[c] - 0.5
        half_depth = np.clip((top - inner) / 2 - 0.3, 0.3, 4.5)
        centre = inner + 0.4 + half_depth
        arc = (g.bounds[c + 1] - g.bounds[c]) * centre
        half_width = np.minimum(0.75 * arc, 1.1 * half_depth)
        tangential = (np.mod(phi - g.mid_angles[c] + np.pi, 2 * np.pi) - np.pi) * rho
        inside = (
            g.goblet[c]
            & (((rho - centre) / half_depth) ** 2 + (tangential / half_width) ** 2 < 1)
            & ~mucin
        )
        owner[inside] = c[inside]
        mucin |= inside
    return mucin, owner


def _lookup(table: Cells, labels: np.ndarray) -> np.ndarray:
    """Row of ``table`` for each (nonzero) label."""
    order = np.argsort(table.id)
    return order[np.searchsorted(table.id[order], labels)]


def _ellipses(cells: Cells, ps: float, body: bool) -> Ellipses:
    if body:
        return Ellipses(
            cells.id,
            cells.body_x / ps,
            cells.body_y / ps,
            cells.body_a / ps,
            cells.body_b / ps,
            cells.body_theta,
            np.zeros((len(cells), 4)),
        )
    return Ellipses(
        cells.id, cells.x / ps, cells.y / ps, cells.a / ps, cells.b / ps, cells.theta, cells.wobble
    )


def _paint_bodies(f: _Canvas, cells: Cells, spec: SlideSpec, x0: int, y0: int) -> None:
    """Cytoplasm of lymphocytes and plasma cells (CD3 membrane on T cells)."""
    with_body = cells.take(cells.body_a > 0)
    h, w = f.eosin.shape
    labels, radius = rasterise(_ellipses(with_body, spec.pixel_size, body=True), x0, y0, h, w)
    inside = (labels > 0) & (radius < 1) & (f.pixel_class == PixelClass.STROMA)
    row = _lookup(with_body, labels[inside])
    plasma = with_body.kind[row] == Kind.PLASMA
    f.cells[inside] = labels[inside]
    f.pixel_class[inside] = np.where(plasma, PixelClass.PLASMA, PixelClass.LYMPHOCYTE)
    f.eosin[inside] = np.where(plasma, _EOSIN["plasma"], _EOSIN["lymphocyte"])
    f.basophil[inside] = np.where(plasma, _HEMA["plasma"], _HEMA["lymphocyte"])
    if spec.marker == "cd3":
        to_edge = (1 - radius[inside]) * with_body.body_b[row]  # micrometres to the membrane
        ring = 0.25 + 0.9 * np.exp(-((to_edge / 0.6) ** 2))
        f.expression[inside] = np.where(with_body.cd3[row], ring * with_body.level[row], 0)


def _profile(kind: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Radial chromatin profile: darker rim; plasma cells' peripheral ('clock-face') clumps."""
    rim = smoothstep(0.6, 1.0, r)
    return np.select(
        [kind == Kind.PLASMA, kind == Kind.EPITHELIAL],
        [0.55 + 0.7 * smoothstep(0.45, 0.9, r), 0.8 + 0.4 * rim],
        0.9 + 0.2 * rim,
    )


def _paint_nuclei(
    f: _Canvas, cells: Cells, spec: SlideSpec, x0: int, y0: int, fine: np.ndarray
) -> None:
    h, w = f.eosin.shape
    ps = spec.pixel_size
    labels, radius = rasterise(_ellipses(cells, ps, body=False), x0, y0, h, w)
    hit = (labels > 0) & (f.pixel_class != PixelClass.GLASS)
    row = _lookup(cells, labels[hit])
    r = radius[hit]
    kind = cells.kind[row]
    # Coverage: anti-aliased across the last half pixel of the outline.
    alpha = np.clip((1 - r) * cells.b[row] / ps + 0.5, 0, 1).astype(np.float32)
    texture = np.select([kind == k for k in _TEXTURE], list(_TEXTURE.values()))
    chromatin = cells.chromatin[row] * _profile(kind, r) * (1 + texture * fine[hit])
    f.chromatin[hit] = alpha * chromatin
    f.basophil[hit] *= 1 - alpha
    f.eosin[hit] = alpha * _EOSIN["nucleus"] + (1 - alpha) * f.eosin[hit]
    inside = np.zeros_like(hit)
    inside[hit] = r < 1
    f.nuclei[inside] = labels[inside]
    fibro = np.zeros_like(hit)
    fibro[hit] = (kind == Kind.FIBROBLAST) & (r < 1)
    f.cells[fibro] = labels[fibro]
    if spec.marker == "ki67":
        positive = np.where(cells.ki67[row], cells.level[row] * (0.75 + 0.35 * fine[hit]), 0)
        f.expression[hit] = alpha * positive + (1 - alpha) * f.expression[hit]
    elif spec.marker == "ck818":  # keratin is cytoplasmic: nuclei stay blue
        f.expression[hit] = (1 - 0.85 * alpha) * f.expression[hit]
    else:  # CD3 membrane above and below the nucleus shows faintly over it
        f.expression[hit] = (1 - 0.75 * alpha) * f.expression[hit]
