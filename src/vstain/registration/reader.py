"""The real IHC under H&E regions, read through a registration: what fine-tuning trains on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vstain.io.slide import Slide
from vstain.registration.registration import Registration


def registered_reader(
    he: Slide, ihc: Slide, registration: Registration
) -> Callable[[int, int, int, int, int], np.ndarray]:
    """A reader ``(x, y, w, h, level) -> (h, w, 3) uint8``: the IHC resampled onto the H&E region
    (x, y, w, h) of H&E ``level`` (white where the IHC does not reach)."""

    def read(x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return registration.warp_ihc_region(ihc, x, y, w, h, he.downsamples[level])[0]

    return read
