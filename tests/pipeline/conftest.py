"""A small checkpoint and a small slide the pipeline tests share."""

import pytest
import torch

from tests.tiles.conftest import make_tissue_image
from vstain.io import write_ome_tiff
from vstain.models import create, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained pix2pix-small checkpoint: 128 px tiles at 0.5 um/px, marker ck818."""
    torch.manual_seed(0)
    model = create("pix2pix", "small", tile_size=128, markers=["ck818"], pixel_size=0.5)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    """A 420 x 300 px H&E-like OME-TIFF (glass on its right fifth), lossless."""
    path = tmp_path_factory.mktemp("slide") / "he.ome.tif"
    write_ome_tiff(
        make_tissue_image(300, 420), path, pixel_size=0.5, compression="deflate", tile=128
    )
    return path
