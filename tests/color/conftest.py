"""Images with known stains for the stain-optics tests."""

import numpy as np
import pytest
from skimage import data

from vstain.color import HED, StainMatrix, concentrations_to_rgb


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two vectors in degrees."""
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def perturbed_stains(seed: int, names: tuple[str, str, str]) -> StainMatrix:
    """HED vectors, each turned by a random few degrees (kept non-negative), named ``names``."""
    rng = np.random.default_rng(seed)
    return StainMatrix(np.abs(HED.vectors + rng.normal(0, 0.06, (3, 3))), names)


def two_stain_image(stains: StainMatrix, seed: int, size: int = 192) -> np.ndarray:
    """RGB image of random mixtures of the first two stains of ``stains`` (no third stain).

    Each pixel has total amount ``a`` in [0.1, 1.5] OD split ``w : 1 - w`` with ``w`` uniform,
    so nearly pure pixels of both stains exist; a quarter of the pixels is glass (amount 0).
    """
    rng = np.random.default_rng(seed)
    n = size * size
    a = rng.uniform(0.1, 1.5, n) * (rng.uniform(size=n) > 0.25)
    w = rng.uniform(size=n)
    conc = np.stack([a * w, a * (1 - w), np.zeros(n)], axis=1)
    return concentrations_to_rgb(conc.reshape(size, size, 3), stains)


@pytest.fixture(scope="session")
def ihc_image() -> np.ndarray:
    """scikit-image's real IHC image (hematoxylin + DAB), 512 x 512 x 3 uint8."""
    return data.immunohistochemistry()
