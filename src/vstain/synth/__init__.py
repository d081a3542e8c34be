"""Tissue simulator: paired H&E / IHC slides with ground truth, tile by tile.

`make_spec` draws a slide (tissue seed, stains, scanners, sectioning); `render_tile` renders any
region of it with nuclei, cell classes, marker-positive masks, DAB and the true transform;
`synth_slide` gives whole slides as lazy dask arrays; `synth_dataset` writes BCI-style tile sets.
"""

from vstain.errors import SynthError
from vstain.synth.cells import Kind
from vstain.synth.compose import PixelClass
from vstain.synth.dataset import synth_dataset
from vstain.synth.render import (
    CellTable,
    SectionTruth,
    TilePair,
    render_he,
    render_ihc,
    render_tile,
)
from vstain.synth.slide import SynthImage, SynthSlide, slide_arrays, synth_slide
from vstain.synth.spec import MARKERS, MODES, SlideSpec, make_spec
from vstain.synth.transform import SectionTransform

__all__ = [
    "MARKERS",
    "MODES",
    "CellTable",
    "Kind",
    "PixelClass",
    "SectionTransform",
    "SectionTruth",
    "SlideSpec",
    "SynthError",
    "SynthImage",
    "SynthSlide",
    "TilePair",
    "make_spec",
    "render_he",
    "render_ihc",
    "render_tile",
    "slide_arrays",
    "synth_dataset",
    "synth_slide",
]
