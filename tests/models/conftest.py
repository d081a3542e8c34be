"""Shared fixtures: one small paired H&E / IHC tile built from scikit-image's real IHC image."""

import numpy as np
import pytest
import torch
from skimage import data

from vstain.color.optics import concentrations_to_rgb, rgb_to_concentrations


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def make_pair(size: int = 64) -> dict[str, torch.Tensor]:
    """IHC crop and an H&E rendering of it (hematoxylin kept, eosin rising with DAB)."""
    ihc = data.immunohistochemistry()[100 : 100 + size, 200 : 200 + size]
    conc = rgb_to_concentrations(ihc)
    eosin = 0.15 + 0.6 * np.clip(conc[..., 2], 0, None)
    he = concentrations_to_rgb(np.stack([conc[..., 0], eosin, np.zeros_like(eosin)], -1))
    return {"he": to_tensor(he), "ihc": to_tensor(ihc)}


@pytest.fixture
def pair() -> dict[str, torch.Tensor]:
    return make_pair()


class GradState:
    """A TrainState that only backpropagates, so the gradients stay for inspection."""

    progress = 0.0
    step = 0

    def __init__(self):
        self.names = []

    def backward_step(self, name, loss):
        self.names.append(name)
        loss.backward()


class Payload:
    """Pickles to a call that creates ``marker``: proves whether a loader unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
