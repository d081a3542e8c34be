"""What a simulated slide is: its tissue seed, marker, size, staining, scanners and sectioning.

`make_spec` draws the per-slide variation (stain vectors, intensities, illumination, focus, noise,
JPEG quality, the adjacent-section transform) from the seed; every field can be overridden with
`dataclasses.replace`. The tissue itself depends only on the seed, the slide size and the tissue
fraction, so the H&E of one seed is the same whatever the marker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from vstain.color.optics import HED, StainMatrix
from vstain.errors import SynthError
from vstain.synth.hashing import stream_key
from vstain.synth.layout import Layout, Piece, make_layout

MARKERS = ("ck818", "cd3", "ki67")
MODES = ("same-section", "adjacent-section")
#: DAB optical density of a fully expressing structure, before the per-slide factor.
MARKER_INTENSITY = {"ck818": 0.7, "cd3": 0.8, "ki67": 0.7}
#: Pixel sizes the tissue model is drawn for (micrometres per pixel, 10x to 60x).
PIXEL_SIZE_RANGE = (0.15, 1.0)


Vectors = tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Staining:
    """Stain vectors (rows H, E, DAB in OD space) and intensities of one slide."""

    he_vectors: Vectors
    ihc_vectors: Vectors
    hematoxylin: float  # gain of hematoxylin in the H&E
    eosin: float  # gain of eosin in the H&E
    counterstain: float  # gain of the hematoxylin counterstain in the IHC
    marker_intensity: float  # DAB OD of full expression
    dab_background: float  # non-specific DAB OD over all tissue

    @property
    def he_stains(self) -> StainMatrix:
        return StainMatrix(np.array(self.he_vectors), HED.names)

    @property
    def ihc_stains(self) -> StainMatrix:
        return StainMatrix(np.array(self.ihc_vectors), HED.names)


@dataclass(frozen=True)
class Scan:
    """One scanner pass: glass colour, illumination, focus, sensor noise and JPEG."""

    background_od: tuple[float, float, float]  # OD of bare glass per RGB channel
    uneven_od: float  # amplitude of slow illumination drift (OD)
    vignette_od: float  # OD darkening at the corners of each camera field
    field_px: int  # camera field of view (vignetting repeats with this period)
    blur_sigma: tuple[float, float]  # Gaussian focus blur, best and worst (pixels)
    noise_std: float  # sensor noise at full intensity (8-bit levels)
    jpeg_quality: int | None  # None: no compression (4:4:4 JPEG on the global 8 px grid)


@dataclass(frozen=True)
class Sectioning:
    """How the IHC section differs from the H&E one in adjacent-section mode."""

    rotation_deg: float
    shift_um: tuple[float, float]
    scale: float
    elastic_um: float  # amplitude of the smooth elastic displacement
    elastic_scale_um: float  # its correlation length
    missing: float  # fraction of H&E cells absent from the IHC section
    new: float  # cells present only in the IHC, as a fraction of the H&E cells


@dataclass(frozen=True)
class SlideSpec:
    """Everything needed to render any region of a simulated H&E / IHC slide pair."""

    seed: int
    marker: str
    width: int
    height: int
    pixel_size: float  # micrometres per pixel
    mode: str
    staining: Staining
    he_scan: Scan
    ihc_scan: Scan
    sectioning: Sectioning
    layout: Layout

    def __post_init__(self):
        if self.marker not in MARKERS:
            raise SynthError(f"Unknown marker {self.marker!r}; choose one of {', '.join(MARKERS)}.")
        if self.mode not in MODES:
            raise SynthError(
                f"Unknown pairing mode {self.mode!r}; choose one of {', '.join(MODES)}."
            )
        lo, hi = PIXEL_SIZE_RANGE
        if not lo <= self.pixel_size <= hi:
            raise SynthError(
                f"Pixel size {self.pixel_size} um is outside {lo}-{hi} um, the range the tissue "
                "model is drawn for; choose a pixel size in it (0.25 is 40x, 0.5 is 20x)."
            )

    @property
    def size_um(self) -> tuple[float, float]:
        """(width, height) in micrometres."""
        return self.width * self.pixel_size, self.height * self.pixel_size

    def with_scans(self, **changes) -> SlideSpec:
        """This spec with the same changes to both scanner passes (e.g. ``jpeg_quality=None``)."""
        return replace(
            self,
            he_scan=replace(self.he_scan, **changes),
            ihc_scan=replace(self.ihc_scan, **changes),
        )

    def to_dict(self) -> dict:
        """A JSON-ready dict (lists for tuples)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> SlideSpec:
        """Inverse of :meth:`to_dict`."""
        layout = d["layout"]
        return cls(
            **{k: d[k] for k in ("seed", "marker", "width", "height", "pixel_size", "mode")},
            staining=Staining(**_tuples(d["staining"])),
            he_scan=Scan(**_tuples(d["he_scan"])),
            ihc_scan=Scan(**_tuples(d["ihc_scan"])),
            sectioning=Sectioning(**_tuples(d["sectioning"])),
            layout=Layout(
                pieces=tuple(Piece(**_tuples(p)) for p in layout["pieces"]),
                **{k: v for k, v in layout.items() if k != "pieces"},
            ),
        )


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _tuples(d: dict) -> dict:
    def conv(v):
        return tuple(conv(x) for x in v) if isinstance(v, list) else v

    return {k: conv(v) for k, v in d.items()}


def _rotate(vector: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate a unit OD vector by ``degrees`` about a random perpendicular axis; keep it >= 0."""
    axis = np.cross(vector, rng.normal(size=3))
    axis /= np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    v = vector * np.cos(t) + np.cross(axis, vector) * np.sin(t)
    v = np.maximum(v, 0.01)
    return v / np.linalg.norm(v)


def _jitter_stains(rng: np.random.Generator, jitter_deg: float, rows: tuple[int, ...]) -> Vectors:
    vectors = HED.vectors.copy()
    for r in rows:
        vectors[r] = _rotate(vectors[r], rng.uniform(-jitter_deg, jitter_deg), rng)
    return tuple(tuple(float(x) for x in row) for row in vectors)


def _draw_scan(rng: np.random.Generator, pixel_size: float) -> Scan:
    base = rng.uniform(0.012, 0.035)
    tint = rng.uniform(-0.005, 0.005, 3)
    return Scan(
        background_od=tuple(float(base + t) for t in tint),
        uneven_od=float(rng.uniform(0.003, 0.012)),
        vignette_od=float(rng.uniform(0.005, 0.02)),
        field_px=round(rng.uniform(400.0, 800.0) / pixel_size),
        blur_sigma=(float(rng.uniform(0.5, 0.8)), float(rng.uniform(1.1, 1.8))),
        noise_std=float(rng.uniform(1.0, 3.0)),
        jpeg_quality=int(rng.integers(75, 96)),
    )


def make_spec(
    seed: int,
    marker: str = "ck818",
    size: int | tuple[int, int] = 4096,
    *,
    pixel_size: float = 0.5,
    mode: str = "same-section",
    tissue_fraction: float | None = None,
    marker_intensity: float | None = None,
    stain_jitter_deg: float = 4.0,
) -> SlideSpec:
    """Draw a slide's variation from ``seed``.

    Parameters
    ----------
    seed
        Seeds the tissue and every per-slide variation.
    marker
        One of ``MARKERS``.
    size
        Slide size in pixels: ``side`` or ``(height, width)``.
    pixel_size
        Micrometres per pixel (0.5 is 20x, 0.25 is 40x).
    mode
        ``"same-section"`` (pixel aligned) or ``"adjacent-section"``.
    tissue_fraction
        Fraction of the slide covered by tissue; drawn in 0.45-0.65 when None.
    marker_intensity
        DAB optical density of full expression; the marker's default times 0.8-1.2 when None.
    stain_jitter_deg
        Stain vectors are rotated by up to this angle.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if width < 64 or height < 64:
        raise SynthError(f"Slide size {width} x {height} px is too small; use at least 64 x 64.")
    if marker not in MARKERS:  # checked early, before drawing anything
        raise SynthError(f"Unknown marker {marker!r}; choose one of {', '.join(MARKERS)}.")
    rng = np.random.default_rng(stream_key(seed, "slide"))
    fraction = float(rng.uniform(0.45, 0.65)) if tissue_fraction is None else tissue_fraction
    if not 0.05 <= fraction <= 0.9:
        raise SynthError(f"Tissue fraction {fraction} is outside 0.05-0.9; choose one inside.")
    intensity = MARKER_INTENSITY[marker] * float(rng.uniform(0.8, 1.2))
    staining = Staining(
        he_vectors=_jitter_stains(rng, stain_jitter_deg, (0, 1)),
        ihc_vectors=_jitter_stains(rng, stain_jitter_deg, (0, 2)),
        hematoxylin=float(rng.uniform(0.9, 1.3)),
        eosin=float(rng.uniform(0.7, 1.2)),
        counterstain=float(rng.uniform(0.45, 0.65)),
        marker_intensity=intensity if marker_intensity is None else float(marker_intensity),
        dab_background=float(rng.uniform(0.01, 0.03)),
    )
    sectioning = Sectioning(
        rotation_deg=float(rng.uniform(-2.0, 2.0)),
        shift_um=(float(rng.uniform(-15, 15)), float(rng.uniform(-15, 15))),
        scale=float(rng.uniform(0.98, 1.02)),
        elastic_um=float(rng.uniform(1.5, 4.0)),
        elastic_scale_um=250.0,
        missing=float(rng.uniform(0.1, 0.2)),
        new=float(rng.uniform(0.1, 0.2)),
    )
    return SlideSpec(
        seed=int(seed),
        marker=marker,
        width=int(width),
        height=int(height),
        pixel_size=float(pixel_size),
        mode=mode,
        staining=staining,
        he_scan=_draw_scan(rng, pixel_size),
        ihc_scan=_draw_scan(rng, pixel_size),
        sectioning=sectioning,
        layout=make_layout(seed, width * pixel_size, height * pixel_size, fraction),
    )
