"""Shared fixtures for the tile engine: a small slide and a translation-equivariant torch model."""

import dask.array as da
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from vstain.io.slide import Slide
from vstain.tiles import OutputSpec

RECEPTIVE_RADIUS = 3  # three 3x3 convolutions


class ConvModel(torch.nn.Module):
    """Random 3-layer CNN: translation-equivariant with receptive-field radius 3."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(8, 3, 3, padding=1),
            torch.nn.Sigmoid(),
        )
        self.calls = 0

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> dict:
        self.calls += 1
        return {"ihc": self.net(torch.from_numpy(batch))}


def whole_image_reference(model: ConvModel, image: np.ndarray, halo: int) -> np.ndarray:
    """The model on the whole image mirror-padded by ``halo`` as tiles are: (3, H, W)."""
    padded = np.pad(image, ((halo, halo), (halo, halo), (0, 0)), mode="symmetric")
    x = torch.from_numpy(padded.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
    out = model.net(x)[0, :, halo:-halo, halo:-halo].detach().numpy()
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def make_tissue_image(h: int = 300, w: int = 420) -> np.ndarray:
    """An H&E-like RGB image (scikit-image's real IHC image resized) on white glass at the right."""
    img = (resize(data.immunohistochemistry(), (h, w), anti_aliasing=True) * 255).astype(np.uint8)
    img[:, int(w * 0.8) :] = 245  # glass
    return img


@pytest.fixture
def tissue_image():
    return make_tissue_image()


@pytest.fixture
def slide(tmp_path, tissue_image):
    level0 = da.from_array(tissue_image, chunks=(64, 64, 3))
    return Slide(tmp_path / "fake.png", [level0], pixel_size=0.5)


@pytest.fixture
def model():
    return ConvModel()


IHC = OutputSpec("ihc", "rgb", 3, background=1.0)
