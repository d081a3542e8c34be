"""Images with known DAB content, built from stain concentrations."""

import numpy as np
import pytest

from vstain.color import HED, concentrations_to_rgb


def stained(dab: np.ndarray, haematoxylin: float = 0.15) -> np.ndarray:
    """RGB uint8 of a DAB concentration map (OD) over a flat haematoxylin background."""
    conc = np.zeros((*dab.shape, 3), np.float32)
    conc[..., 0] = haematoxylin
    conc[..., 2] = dab
    return concentrations_to_rgb(conc, HED)


def blobs(shape: tuple[int, int], centres, radius: int = 4, value: float = 0.5) -> np.ndarray:
    """A DAB map with discs of ``value`` OD at ``centres`` (row, col)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dab = np.zeros(shape, np.float32)
    for r, c in centres:
        dab[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = value
    return dab


@pytest.fixture
def four_cells() -> list[tuple[int, int]]:
    return [(10, 10), (10, 40), (40, 10), (40, 40)]
