"""Whole simulated slides as lazy dask arrays: nothing is rendered until a chunk is read."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.base import tokenize

from vstain.synth.render import render_he, render_ihc
from vstain.synth.spec import SlideSpec, make_spec
from vstain.synth.transform import SectionTransform

_RENDER = {"he": render_he, "ihc": render_ihc}


class SynthImage:
    """One image of a simulated slide as a read-only array-like, (height, width, 3) uint8.

    Slicing renders the requested rows and columns (steps and integer indices are applied to the
    rendered box), so ``dask.array.from_array`` can stream it chunk by chunk.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, spec: SlideSpec, modality: str):
        if modality not in _RENDER:
            raise ValueError(f"modality must be 'he' or 'ihc', not {modality!r}")
        self.spec = spec
        self.modality = modality

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.height, self.spec.width, 3

    def __dask_tokenize__(self):
        return "vstain-synth", self.modality, self.spec.to_dict()

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = (*key[:i], *(slice(None),) * (4 - len(key)), *key[i + 1 :])
        key = (*key, *(slice(None),) * (3 - len(key)))
        (r0, r1), (c0, c1) = (_box(k, n) for k, n in zip(key[:2], self.shape[:2], strict=True))
        if r1 <= r0 or c1 <= c0:
            region = np.zeros((max(r1 - r0, 0), max(c1 - c0, 0), 3), np.uint8)
        else:
            region = _RENDER[self.modality](self.spec, c0, r0, c1 - c0, r1 - r0)
        return region[(*(_relative(k) for k in key[:2]), key[2])]


def _box(k, n: int) -> tuple[int, int]:
    """Smallest range [lo, hi) holding the index ``k`` (slice or integer) of an axis of size n."""
    if isinstance(k, slice):
        start, stop, step = k.indices(n)
        if step < 0:
            raise IndexError("negative steps are not supported")
        count = len(range(start, stop, step))
        return start, start + (count - 1) * step + 1 if count else start
    i = int(k) + n if int(k) < 0 else int(k)
    if not 0 <= i < n:
        raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
    return i, i + 1


def _relative(k):
    """Index ``k`` relative to the box `_box` gives for it."""
    return slice(None, None, k.step) if isinstance(k, slice) else 0


@dataclass(frozen=True)
class SynthSlide:
    """A simulated slide pair: lazy H&E and IHC (Y, X, 3) uint8 arrays and their spec."""

    spec: SlideSpec
    he: da.Array
    ihc: da.Array

    @property
    def transform(self) -> SectionTransform | None:
        """The true H&E-to-IHC transform (None for same-section pairs)."""
        return (
            SectionTransform.from_spec(self.spec) if self.spec.mode == "adjacent-section" else None
        )


def slide_arrays(spec: SlideSpec, chunk: int = 1024) -> tuple[da.Array, da.Array]:
    """Lazy H&E and IHC arrays of a spec, chunks of ``chunk`` px. Each chunk of each array
    paints its own tissue (plus a blur margin of a few pixels); chunks that are multiples of
    JPEG's 8 px block render nothing twice."""
    arrays = []
    for modality in ("he", "ihc"):
        image = SynthImage(spec, modality)
        arrays.append(
            da.from_array(
                image,
                chunks=(chunk, chunk, 3),
                name=f"synth-{modality}-" + tokenize(image),
                meta=np.empty((0, 0, 0), np.uint8),
            )
        )
    return arrays[0], arrays[1]


def synth_slide(
    marker: str = "ck818",
    size: int | tuple[int, int] = 20000,
    seed: int = 0,
    mode: str = "same-section",
    *,
    pixel_size: float = 0.5,
    chunk: int = 1024,
    **spec_options,
) -> SynthSlide:
    """A simulated H&E / IHC slide pair as lazy dask arrays, ready to stream to a writer.

    ``spec_options`` go to `make_spec` (``tissue_fraction``, ``marker_intensity``,
    ``stain_jitter_deg``).
    """
    spec = make_spec(seed, marker, size, pixel_size=pixel_size, mode=mode, **spec_options)
    he, ihc = slide_arrays(spec, chunk)
    return SynthSlide(spec, he, ihc)
