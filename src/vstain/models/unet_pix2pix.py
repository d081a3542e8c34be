"""pix2pix and PyramidPix2Pix with a U-Net generator (pix2pix's ``unet_256`` / ``unet_128``, BCI's
``attention_unet_32``): the baselines' training with another generator, mainly to run imported
public weights. Inputs must be multiples of ``2 ** num_downs`` px.
"""

from __future__ import annotations

from vstain.models.base import ModelCard
from vstain.models.blocks.resnet_generator import GENERATOR_KEYS
from vstain.models.blocks.unet_generator import UnetGenerator
from vstain.models.pix2pix import _SMALL as _RESNET_SMALL
from vstain.models.pix2pix import PYRAMID, PYRAMID_LEGACY, Pix2Pix, PyramidPix2Pix
from vstain.models.registry import register

#: The discriminator and optimiser settings of the ResNet baselines.
_TRAINING = {k: v for k, v in _RESNET_SMALL.items() if k not in GENERATOR_KEYS}
_SMALL = {"ngf": 8, "num_downs": 5, "norm": "batch", "dropout": False, "attention": False}
_SMALL |= _TRAINING
#: pix2pix's default generator (``--netG unet_256``, dropout on).
_UNET_256 = {**_SMALL, "ngf": 64, "num_downs": 8, "dropout": True, "ndf": 64}
#: The BCI repository's default generator (``--netG attention_unet_32``).
_ATTENTION_32 = {**_UNET_256, "num_downs": 5, "attention": True}


@register(
    "pix2pix-unet",
    configs={"small": {**_SMALL, "lambda_l1": 100.0}, "paper": {**_UNET_256, "lambda_l1": 100.0}},
)
class UnetPix2Pix(Pix2Pix):
    """pix2pix (GAN + L1) with a U-Net generator."""

    generator_class = UnetGenerator

    def __init__(self, card: ModelCard):
        super().__init__(card)
        self.size_multiple = self.generator.size_multiple


@register(
    "pyramid-pix2pix-unet",
    configs={
        "small": {**_SMALL, "attention": True, **PYRAMID},
        "paper": {**_ATTENTION_32, **PYRAMID},
    },
    legacy=PYRAMID_LEGACY,
)
class UnetPyramidPix2Pix(UnetPix2Pix, PyramidPix2Pix):
    """PyramidPix2Pix (BCI): Gaussian-pyramid L1, U-Net generator (with attention by default)."""
