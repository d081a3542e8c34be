"""Render any region of a simulated slide pair, with its ground truth.

A region is painted (`compose`) with a margin for the blur, turned into optical density by
Beer-Lambert with the slide's stain vectors, scanned (illumination, focus, noise) and JPEG
compressed on the global 8 px block grid. The IHC of an adjacent section is painted from the
second section and resampled through the true transform. Every step depends only on global
coordinates, so a region gives the same pixels whether rendered alone or inside a larger one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from vstain.color.optics import StainMatrix, od_to_rgb
from vstain.errors import RegionError
from vstain.synth.cells import Cells
from vstain.synth.compose import Fields, PixelClass, compose
from vstain.synth.scanner import JPEG_BLOCK, blur_margin, expose, jpeg
from vstain.synth.spec import MARKERS, SlideSpec
from vstain.synth.transform import SectionTransform

#: Share of non-nuclear hematoxylin (cytoplasm, mucin) that the IHC counterstain shows.
COUNTERSTAIN_CYTOPLASM = 0.5
#: Counterstain taken up by matrix per unit of eosin density: without it, connective tissue
#: would vanish from the IHC, where real slides show it faintly.
COUNTERSTAIN_MATRIX = 0.15


@dataclass(frozen=True)
class SectionTruth:
    """Ground truth of one image of a pair, pixel aligned with it."""

    nuclei: np.ndarray  # int32 nucleus instance labels (cell ids, 0 = none)
    cells: np.ndarray  # int32 cell labels where a cell's extent is defined
    pixel_class: np.ndarray  # uint8 PixelClass
    positive: dict[str, np.ndarray]  # bool mask of marker-positive cells, for every marker
    dab: np.ndarray  # float32 DAB concentration (OD) of the slide's marker


@dataclass(frozen=True)
class CellTable:
    """Cells whose nucleus centre lies in the H&E tile; positions are global pixels."""

    id: np.ndarray  # int32
    kind: np.ndarray  # uint8 Kind
    x: np.ndarray  # nucleus centre in the H&E
    y: np.ndarray
    ihc_x: np.ndarray  # the same tissue point in the IHC
    ihc_y: np.ndarray
    in_he: np.ndarray  # nucleus present in the H&E section
    in_ihc: np.ndarray  # ... and in the IHC section
    positive: dict[str, np.ndarray]  # per marker


@dataclass(frozen=True)
class TilePair:
    """A rendered H&E / IHC pair with everything known about it."""

    x: int  # H&E region
    y: int
    ihc_x: int  # IHC region (same size); equals (x, y) unless asked otherwise
    ihc_y: int
    he: np.ndarray  # uint8 (h, w, 3), scanned
    ihc: np.ndarray
    he_clean: np.ndarray  # uint8 Beer-Lambert rendering without illumination, blur, noise, JPEG
    ihc_clean: np.ndarray
    he_truth: SectionTruth
    ihc_truth: SectionTruth
    cells: CellTable
    transform: SectionTransform | None  # None for same-section pairs
    #: With ``aligned_ihc``: the H&E section itself stained for the marker (H&E coordinates).
    ihc_aligned: np.ndarray | None = None


def _check_region(spec: SlideSpec, x: int, y: int, w: int, h: int) -> None:
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > spec.width or y + h > spec.height:
        raise RegionError(
            f"Region x={x}, y={y}, w={w}, h={h} is outside the simulated slide "
            f"({spec.width} x {spec.height} px). Choose a region inside it."
        )


@dataclass(frozen=True)
class _Plan:
    """The region on JPEG's 8 px block grid that covers a request, and the blur margin."""

    x: int
    y: int
    w: int
    h: int
    margin: int

    @classmethod
    def cover(cls, spec: SlideSpec, x: int, y: int, w: int, h: int) -> _Plan:
        _check_region(spec, x, y, w, h)
        scans = (spec.he_scan, spec.ihc_scan)
        t = JPEG_BLOCK
        ax, ay = x - x % t, y - y % t
        ax1 = min(-(-(x + w) // t) * t, spec.width)
        ay1 = min(-(-(y + h) // t) * t, spec.height)
        return cls(ax, ay, ax1 - ax, ay1 - ay, max(blur_margin(s) for s in scans))

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) painted: the region plus the margin."""
        m = self.margin
        return self.x - m, self.y - m, self.w + 2 * m, self.h + 2 * m

    def crop_box(self, a: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Part (x, y, w, h) of an array covering ``box``."""
        bx, by = self.box[:2]
        return a[y - by : y - by + h, x - bx : x - bx + w]

    def crop_region(self, a: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Part (x, y, w, h) of an array covering the region (without margin)."""
        return a[y - self.y : y - self.y + h, x - self.x : x - self.x + w]


def _od(conc: list[np.ndarray], stains: StainMatrix) -> np.ndarray:
    """Beer-Lambert: OD (h, w, 3) of the first stains' concentration maps, in a fixed order."""
    v = stains.vectors.astype(np.float32)
    od = conc[0][..., None] * v[0]
    for c, row in zip(conc[1:], v[1 : len(conc)], strict=True):
        od += c[..., None] * row
    return od


def _dab(spec: SlideSpec, expression: np.ndarray, pixel_class: np.ndarray) -> np.ndarray:
    """DAB concentration (OD): the marker's expression plus non-specific staining of tissue."""
    st = spec.staining
    tissue = (pixel_class != PixelClass.GLASS).astype(np.float32)
    return np.float32(st.marker_intensity) * expression + np.float32(st.dab_background) * tissue


def _he_od(spec: SlideSpec, f: Fields) -> np.ndarray:
    """H&E optical density of painted fields."""
    st = spec.staining
    hema = np.float32(st.hematoxylin) * (f.chromatin + f.basophil)
    return _od([hema, np.float32(st.eosin) * f.eosin], st.he_stains)


def _ihc_od(spec: SlideSpec, f: Fields) -> np.ndarray:
    """IHC optical density: hematoxylin counterstain and the marker's DAB."""
    st = spec.staining
    chromatin = f.chromatin
    if spec.marker == "ki67":  # brown nuclei take up less counterstain
        chromatin = chromatin * (1 - 0.5 * np.clip(f.expression, 0, 1))
    hema = np.float32(st.counterstain) * (
        chromatin + COUNTERSTAIN_CYTOPLASM * f.basophil + COUNTERSTAIN_MATRIX * f.eosin
    )
    od = _od([hema], st.ihc_stains)
    dab = _dab(spec, f.expression, f.pixel_class)
    od += dab[..., None] * st.ihc_stains.vectors[2].astype(np.float32)
    return od


def _ihc_fields(spec: SlideSpec, plan: _Plan) -> Fields:
    """Fields of the IHC image over ``plan.box``: section "a" itself, or section "b" warped."""
    if spec.mode == "same-section":
        return compose(spec, "a", *plan.box)
    return _warped_fields(spec, SectionTransform.from_spec(spec), *plan.box)


def _warped_fields(
    spec: SlideSpec, tr: SectionTransform, x0: int, y0: int, w: int, h: int
) -> Fields:
    """Section "b" seen on the IHC pixel grid of (x0, y0, w, h)."""
    hx, hy = tr.ihc_grid_to_he(x0, y0, w, h)
    bx0, by0 = int(np.floor(hx.min())) - 1, int(np.floor(hy.min())) - 1
    bw, bh = int(np.floor(hx.max())) + 3 - bx0, int(np.floor(hy.max())) + 3 - by0
    src = compose(spec, "b", bx0, by0, bw, bh)
    coords = np.stack([hy - by0, hx - bx0])

    def warp(a: np.ndarray, order: int) -> np.ndarray:
        return ndi.map_coordinates(a, coords, order=order, mode="nearest", prefilter=False)

    return Fields(
        *(warp(getattr(src, n), 1) for n in ("chromatin", "basophil", "eosin", "expression")),
        *(warp(getattr(src, n), 0) for n in ("nuclei", "cells", "pixel_class")),
        src.table,
    )


def _scan(spec: SlideSpec, plan: _Plan, od: np.ndarray, which: str) -> np.ndarray:
    scan = spec.he_scan if which == "he" else spec.ihc_scan
    m = plan.margin
    image = expose(od, scan, spec.seed, which, *plan.box[:2], spec.pixel_size)[m:-m, m:-m]
    return jpeg(image, plan.x, plan.y, scan)


def render_he(spec: SlideSpec, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The scanned H&E of a region, uint8 (h, w, 3)."""
    plan = _Plan.cover(spec, x, y, w, h)
    image = _scan(spec, plan, _he_od(spec, compose(spec, "a", *plan.box)), "he")
    return plan.crop_region(image, x, y, w, h)


def render_ihc(
    spec: SlideSpec, x: int, y: int, w: int, h: int, *, section: str = "ihc"
) -> np.ndarray:
    """The scanned IHC of a region, uint8 (h, w, 3).

    ``section="ihc"``: the IHC section, in IHC pixel coordinates. ``section="he"``: the H&E
    section itself stained for the marker, in H&E coordinates; in adjacent-section mode this is
    the pixel-aligned IHC no real adjacent pair has (same as "ihc" in same-section mode).
    """
    plan = _Plan.cover(spec, x, y, w, h)
    fields = compose(spec, "a", *plan.box) if section == "he" else _ihc_fields(spec, plan)
    return _scanned_ihc(spec, plan, fields, x, y, w, h)


def _scanned_ihc(
    spec: SlideSpec, plan: _Plan, fields: Fields, x: int, y: int, w: int, h: int
) -> np.ndarray:
    return plan.crop_region(_scan(spec, plan, _ihc_od(spec, fields), "ihc"), x, y, w, h)


def _rows(table: Cells, labels: np.ndarray) -> np.ndarray:
    """Row of ``table`` for each label (-1 where the label is 0)."""
    order = np.argsort(table.id)
    rows = np.full(labels.shape, -1, np.int64)
    hit = labels > 0
    rows[hit] = order[np.searchsorted(table.id[order], labels[hit])]
    return rows


def _truth(spec: SlideSpec, f: Fields, crop) -> SectionTruth:
    nuclei, cells, pixel_class = crop(f.nuclei), crop(f.cells), crop(f.pixel_class)
    by_cell, by_nucleus = _rows(f.table, cells), _rows(f.table, nuclei)
    positive = {}
    for m in MARKERS:
        rows = by_nucleus if m == "ki67" else by_cell
        positive[m] = rows >= 0
        positive[m][rows >= 0] = f.table.positive(m)[rows[rows >= 0]]
    return SectionTruth(
        nuclei, cells, pixel_class, positive, _dab(spec, crop(f.expression), pixel_class)
    )


def _cell_table(
    spec: SlideSpec, table: Cells, tr: SectionTransform | None, x: int, y: int, w: int, h: int
) -> CellTable:
    px, py = table.x / spec.pixel_size, table.y / spec.pixel_size
    t = table.take((px >= x) & (px < x + w) & (py >= y) & (py < y + h))
    px, py = t.x / spec.pixel_size, t.y / spec.pixel_size
    qx, qy = (px, py) if tr is None else tr.he_to_ihc(px, py)
    return CellTable(
        id=t.id.astype(np.int32),
        kind=t.kind,
        x=px,
        y=py,
        ihc_x=qx,
        ihc_y=qy,
        in_he=t.in_a,
        in_ihc=t.in_b,
        positive={m: t.positive(m) for m in MARKERS},
    )


def render_tile(
    spec: SlideSpec,
    x: int,
    y: int,
    w: int,
    h: int,
    *,
    ihc_origin: tuple[int, int] | None = None,
    aligned_ihc: bool = False,
) -> TilePair:
    """Render the H&E region (x, y, w, h) and the IHC region of the same size at ``ihc_origin``
    (default (x, y)), both scanned and clean, with their ground truth; ``aligned_ihc`` also
    renders ``render_ihc(..., section="he")`` from the H&E's own fields."""
    ihc_x, ihc_y = (x, y) if ihc_origin is None else ihc_origin
    plan = _Plan.cover(spec, x, y, w, h)
    fields_a = compose(spec, "a", *plan.box)
    od_he = _he_od(spec, fields_a)
    he = plan.crop_region(_scan(spec, plan, od_he, "he"), x, y, w, h)
    shared = spec.mode == "same-section" and (ihc_x, ihc_y) == (x, y)
    if shared:
        ihc_plan, fields_b = plan, fields_a
    else:
        ihc_plan = _Plan.cover(spec, ihc_x, ihc_y, w, h)
        fields_b = _ihc_fields(spec, ihc_plan)
    od_ihc = _ihc_od(spec, fields_b)
    ihc = ihc_plan.crop_region(_scan(spec, ihc_plan, od_ihc, "ihc"), ihc_x, ihc_y, w, h)
    transform = SectionTransform.from_spec(spec) if spec.mode == "adjacent-section" else None
    he_truth = _truth(spec, fields_a, lambda a: plan.crop_box(a, x, y, w, h))
    return TilePair(
        x=x,
        y=y,
        ihc_x=ihc_x,
        ihc_y=ihc_y,
        he=he,
        ihc=ihc,
        he_clean=od_to_rgb(plan.crop_box(od_he, x, y, w, h)),
        ihc_clean=od_to_rgb(ihc_plan.crop_box(od_ihc, ihc_x, ihc_y, w, h)),
        he_truth=he_truth,
        ihc_truth=he_truth
        if shared
        else _truth(spec, fields_b, lambda a: ihc_plan.crop_box(a, ihc_x, ihc_y, w, h)),
        cells=_cell_table(spec, fields_a.table, transform, x, y, w, h),
        transform=transform,
        ihc_aligned=_scanned_ihc(spec, plan, fields_a, x, y, w, h) if aligned_ihc else None,
    )
