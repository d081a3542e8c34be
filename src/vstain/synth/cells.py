"""Cells: epithelial cells of glands and stromal cells on a jittered lattice of sites.

Every cell has a global id (the same in every tile, in both sections), a kind, a nucleus ellipse,
an optional cell-body ellipse, marker states and whether it is present in each section. Random
attributes are hashes of the cell id, so a cell is the same whichever tile asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from vstain.errors import SynthError
from vstain.synth.anatomy import SITE_UM, fibre_direction, site_densities
from vstain.synth.glands import MAX_GLAND_CELLS, Gland
from vstain.synth.hashing import stream_key, uniform
from vstain.synth.layout import Layout, tissue_field
from vstain.synth.noise import PointSampler
from vstain.synth.spec import Sectioning

#: The id lattice extends this far beyond the slide on every side (sites, gland blocks).
_PAD_SITES = 2048
_PAD_BLOCKS = 144
#: Largest distance from a stromal site to any pixel of its cell (micrometres).
STROMA_REACH_UM = 16.0
#: Fraction of epithelial cells whose nucleus lies in the plane of a section.
EPITHELIAL_NUCLEUS_VISIBLE = 0.92
#: Fraction of lymphocytes that are T cells (CD3+).
CD3_FRACTION = 0.65
#: Ki67 (proliferating) fraction per kind outside glands.
KI67_RATE = {"lymphocyte": 0.06, "plasma": 0.01, "fibroblast": 0.03}


class Kind(IntEnum):
    """Kinds of cell."""

    EPITHELIAL = 1
    FIBROBLAST = 2
    LYMPHOCYTE = 3
    PLASMA = 4


@dataclass(frozen=True)
class Cells:
    """Cells as parallel arrays; positions and sizes in micrometres, angles in radians."""

    id: np.ndarray  # int64
    kind: np.ndarray  # uint8, Kind
    x: np.ndarray  # nucleus centre
    y: np.ndarray
    a: np.ndarray  # nucleus semi-axis along theta
    b: np.ndarray
    theta: np.ndarray
    wobble: np.ndarray  # (n, 4): cos 2, sin 2, cos 3, sin 3 outline harmonics of the nucleus
    chromatin: np.ndarray  # hematoxylin density of the nucleus
    body_x: np.ndarray  # cell-body ellipse (body_a == 0: no body of its own)
    body_y: np.ndarray
    body_a: np.ndarray
    body_b: np.ndarray
    body_theta: np.ndarray
    cd3: np.ndarray  # bool
    ki67: np.ndarray  # bool
    level: np.ndarray  # marker expression factor of the cell
    in_a: np.ndarray  # present in the H&E section
    in_b: np.ndarray  # present in the IHC section

    def __len__(self) -> int:
        return len(self.id)

    def take(self, index: np.ndarray) -> Cells:
        """The cells selected by a boolean mask or index array."""
        return Cells(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Cells]) -> Cells:
        return Cells(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Cells)}
        )

    def positive(self, marker: str) -> np.ndarray:
        """Which cells carry ``marker``."""
        if marker == "ck818":
            return self.kind == Kind.EPITHELIAL
        return {"cd3": self.cd3, "ki67": self.ki67}[marker]


@dataclass(frozen=True)
class IdSpace:
    """Global cell ids: stromal sites first, then ``MAX_GLAND_CELLS`` per gland block."""

    site_cols: int
    site_rows: int
    block_cols: int

    @classmethod
    def for_slide(cls, width_um: float, height_um: float, block_um: float) -> IdSpace:
        space = cls(
            int(np.ceil(width_um / SITE_UM)) + 2 * _PAD_SITES,
            int(np.ceil(height_um / SITE_UM)) + 2 * _PAD_SITES,
            int(np.ceil(width_um / block_um)) + 2 * _PAD_BLOCKS,
        )
        block_rows = int(np.ceil(height_um / block_um)) + 2 * _PAD_BLOCKS
        if space.gland_first_id(space.block_cols, block_rows) >= np.iinfo(np.int32).max:
            raise SynthError(
                f"A slide of {width_um / 1000:.0f} x {height_um / 1000:.0f} mm has more cells "
                "than 32-bit labels can number; simulate a smaller slide."
            )
        return space

    def site_ids(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return 1 + (j + _PAD_SITES) * self.site_cols + (i + _PAD_SITES)

    def in_range(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (
            (i >= -_PAD_SITES)
            & (i < self.site_cols - _PAD_SITES)
            & (j >= -_PAD_SITES)
            & (j < self.site_rows - _PAD_SITES)
        )

    def gland_first_id(self, bx: int, by: int) -> int:
        block = (by + _PAD_BLOCKS) * self.block_cols + (bx + _PAD_BLOCKS)
        return 1 + self.site_cols * self.site_rows + block * MAX_GLAND_CELLS


def _u(seed: int, name: str, ids: np.ndarray) -> np.ndarray:
    """A uniform number per cell id for the attribute ``name``."""
    return uniform(stream_key(seed, "cell", name), ids)


def _between(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def _presence(
    seed: int, ids: np.ndarray, in_a: np.ndarray, p_a: np.ndarray, sectioning: Sectioning | None
) -> np.ndarray:
    """Presence in the IHC section: the H&E one, less ``missing``, plus ``new`` as many again."""
    if sectioning is None:
        return in_a.copy()
    keep = _u(seed, "keep", ids) >= sectioning.missing
    p_new = np.minimum(1.0, sectioning.new * p_a / np.maximum(1.0 - p_a, 1e-6))
    return np.where(in_a, keep, _u(seed, "new", ids) < p_new)


def _wobble(seed: int, ids: np.ndarray, amount: float) -> np.ndarray:
    return np.stack(
        [_between(_u(seed, f"wobble-{k}", ids), -amount, amount) for k in range(4)], axis=1
    )


def gland_cells(
    seed: int, glands: list[Gland], space: IdSpace, sectioning: Sectioning | None
) -> Cells:
    """The epithelial cells of ``glands``."""
    parts = []
    for g in glands:
        ids = space.gland_first_id(*g.block) + np.arange(g.n_cells, dtype=np.int64)
        x, y = g.nucleus_centres()
        in_a = _u(seed, "visible", ids) < EPITHELIAL_NUCLEUS_VISIBLE
        zeros = np.zeros(g.n_cells)
        parts.append(
            Cells(
                id=ids,
                kind=np.full(g.n_cells, Kind.EPITHELIAL, np.uint8),
                x=x,
                y=y,
                a=g.nucleus_a,
                b=g.nucleus_b,
                theta=g.angle + g.mid_angles,
                wobble=_wobble(seed, ids, 0.06),
                chromatin=_between(_u(seed, "chromatin", ids), 0.75, 0.95)
                * np.where(g.goblet, 1.2, 1),
                body_x=zeros,
                body_y=zeros,
                body_a=zeros,
                body_b=zeros,
                body_theta=zeros,
                cd3=np.zeros(g.n_cells, bool),
                ki67=_u(seed, "ki67", ids) < g.ki67_rate,
                level=_between(_u(seed, "level", ids), 0.8, 1.2) * np.where(g.goblet, 0.7, 1.0),
                in_a=in_a,
                in_b=_presence(
                    seed, ids, in_a, np.full(g.n_cells, EPITHELIAL_NUCLEUS_VISIBLE), sectioning
                ),
            )
        )
    return Cells.concat(parts) if parts else _empty()


def _empty() -> Cells:
    arrays = {f.name: np.zeros(0) for f in fields(Cells)}
    arrays.update(id=np.zeros(0, np.int64), kind=np.zeros(0, np.uint8), wobble=np.zeros((0, 4)))
    for name in ("cd3", "ki67", "in_a", "in_b"):
        arrays[name] = np.zeros(0, bool)
    return Cells(**arrays)


def _outside_glands(
    glands: list[Gland], x: np.ndarray, y: np.ndarray, margin: np.ndarray
) -> np.ndarray:
    keep = np.ones(x.shape, bool)
    for g in glands:
        near = np.flatnonzero(np.maximum(np.abs(x - g.x), np.abs(y - g.y)) < g.reach + 12.0)
        u, v = g.to_gland_frame(x[near], y[near])
        rho = np.maximum(np.hypot(u, v), 1e-9)
        keep[near[rho < g.outer_radius(u / rho, v / rho) + margin[near]]] = False
    return keep


def stroma_cells(
    seed: int,
    layout: Layout,
    glands: list[Gland],
    space: IdSpace,
    box: tuple[float, float, float, float],
    sectioning: Sectioning | None,
) -> Cells:
    """Lymphocytes, plasma cells and fibroblasts whose site lies in ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    i, j = np.meshgrid(
        np.arange(np.floor(x0 / SITE_UM), np.ceil(x1 / SITE_UM), dtype=np.int64),
        np.arange(np.floor(y0 / SITE_UM), np.ceil(y1 / SITE_UM), dtype=np.int64),
    )
    i, j = i.ravel(), j.ravel()
    ok = space.in_range(i, j)
    i, j = i[ok], j[ok]
    ids = space.site_ids(i, j)
    x = (i + 0.5 + _between(_u(seed, "jitter-x", ids), -0.35, 0.35)) * SITE_UM
    y = (j + 0.5 + _between(_u(seed, "jitter-y", ids), -0.35, 0.35)) * SITE_UM
    at = PointSampler(seed, x, y)
    d = site_densities(at)
    p_total = np.minimum(d.lymphocyte + d.plasma + d.fibroblast, 0.95)
    share = _u(seed, "kind", ids) * (d.lymphocyte + d.plasma + d.fibroblast)
    kind = np.where(
        share < d.lymphocyte,
        Kind.LYMPHOCYTE,
        np.where(share < d.lymphocyte + d.plasma, Kind.PLASMA, Kind.FIBROBLAST),
    )
    in_a = _u(seed, "occupied", ids) < p_total
    in_b = _presence(seed, ids, in_a, p_total, sectioning)
    keep = (in_a | in_b) & (tissue_field(layout, at) > 0)
    cells = _site_cells(
        seed, ids[keep], kind[keep].astype(np.uint8), x[keep], y[keep], in_a[keep], in_b[keep]
    )
    margin = np.maximum(cells.a, cells.body_a) + 1.5
    return cells.take(_outside_glands(glands, cells.x, cells.y, margin))


def _site_cells(
    seed: int,
    ids: np.ndarray,
    kind: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    in_a: np.ndarray,
    in_b: np.ndarray,
) -> Cells:
    lymph, plasma, fibro = (kind == k for k in (Kind.LYMPHOCYTE, Kind.PLASMA, Kind.FIBROBLAST))
    u = {
        name: _u(seed, name, ids)
        for name in ("r", "elong", "angle", "cd3", "ki67", "chromatin", "body-a", "body-b", "level")
    }
    cd3 = lymph & (u["cd3"] < CD3_FRACTION)
    # Lymphocytes: small round dark nuclei; T cells slightly larger and paler (the subtle H&E cue).
    r = np.where(
        lymph, _between(u["r"], 2.4, 2.9) * np.where(cd3, 1.1, 1.0), _between(u["r"], 2.3, 2.8)
    )
    a = np.where(fibro, _between(u["r"], 4.5, 7.5), r * _between(u["elong"], 1.0, 1.12))
    b = np.where(fibro, _between(u["elong"], 0.9, 1.5), r)
    theta = _between(u["angle"], 0, np.pi)
    if fibro.any():
        theta[fibro] = fibre_direction(PointSampler(seed, x[fibro], y[fibro])) + (
            _between(u["angle"][fibro], -0.3, 0.3)
        )
    chromatin = np.select(
        [lymph, plasma],
        [
            _between(u["chromatin"], 1.05, 1.25) * np.where(cd3, 0.88, 1.0),
            _between(u["chromatin"], 0.85, 1.0),
        ],
        _between(u["chromatin"], 0.9, 1.1),
    )
    # Bodies: a thin rim around lymphocytes; plasma cells have an oval body, nucleus to one side.
    body_a = np.select([lymph, plasma], [1.35 * r, _between(u["body-a"], 4.6, 5.6)], 0.0)
    body_b = np.select([lymph, plasma], [1.35 * r, _between(u["body-b"], 3.4, 4.1)], 0.0)
    offset = np.where(plasma, body_a - r - 0.5, 0.0)
    ki67_rate = np.select(
        [lymph, plasma], [KI67_RATE["lymphocyte"], KI67_RATE["plasma"]], KI67_RATE["fibroblast"]
    )
    return Cells(
        id=ids,
        kind=kind,
        x=x,
        y=y,
        a=a,
        b=b,
        theta=theta,
        wobble=_wobble(seed, ids, 0.05) * np.where(fibro, 0.5, 1.0)[:, None],
        chromatin=chromatin,
        body_x=x - offset * np.cos(theta),
        body_y=y - offset * np.sin(theta),
        body_a=body_a,
        body_b=body_b,
        body_theta=theta,
        cd3=cd3,
        ki67=u["ki67"] < ki67_rate,
        level=_between(u["level"], 0.75, 1.25),
        in_a=in_a,
        in_b=in_b,
    )
