"""The baselines: pix2pix and PyramidPix2Pix (BCI), both a ResNet generator + conditional PatchGAN.

Each training step updates the discriminator, then the generator (GAN loss + reconstruction), as
in pix2pix. ``paper`` follows the public code's defaults (ngf 64, 9 blocks, batch norm, dropout,
vanilla GAN, Adam 2e-4 / (0.5, 0.999), linear decay over the second half); ``small`` fits a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Adam, Optimizer

from vstain.models.base import (
    ModelCard,
    Prediction,
    StainModel,
    TrainState,
    linear_decay,
    to_model_range,
)
from vstain.models.blocks.patchgan import PatchGANDiscriminator
from vstain.models.blocks.resnet_generator import STRIDE, ResnetGenerator
from vstain.models.losses import (
    check_pyramid_form,
    discriminator_loss,
    gaussian_pyramid_l1,
    generator_loss,
)
from vstain.models.registry import register

_SMALL = {
    "ngf": 16,
    "n_blocks": 3,
    "norm": "batch",
    "dropout": False,
    "antialias": False,
    "antialias_up": False,
    "spectral_norm": False,
    "ndf": 16,
    "n_layers_d": 3,
    "norm_d": "batch",
    "gan_mode": "nonsaturating",
    "lr": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "lr_decay_start": 0.5,
}
_PAPER = {**_SMALL, "ngf": 64, "n_blocks": 9, "dropout": True, "ndf": 64}
#: PyramidPix2Pix's loss: its weights and pyramid; ``pyramid_form="asp"`` builds ASP-DGRank's.
PYRAMID = {"pyramid_weights": [25.0] * 4, "pyramid_form": "pyramidpix2pix"}
#: Checkpoints written before ``pyramid_form`` existed used PyramidPix2Pix's pyramid.
PYRAMID_LEGACY = {"pyramid_form": "pyramidpix2pix"}


@register(
    "pix2pix",
    configs={"small": {**_SMALL, "lambda_l1": 100.0}, "paper": {**_PAPER, "lambda_l1": 100.0}},
)
class Pix2Pix(StainModel):
    """pix2pix with a ResNet generator: GAN loss + ``lambda_l1`` x L1 (in [-1, 1] units)."""

    size_multiple = STRIDE
    training_only = ("discriminator",)
    #: Builds the generator from the config (``from_config``); variants swap it.
    generator_class = ResnetGenerator

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = card.config
        self.generator = self.generator_class.from_config(cfg)
        self.discriminator = PatchGANDiscriminator(6, cfg["ndf"], cfg["n_layers_d"], cfg["norm_d"])

    def receptive_halo(self) -> int:
        return self.generator.halo()

    def infer(self, x: Tensor) -> Prediction:
        return Prediction(ihc=self.generator(x))

    def configure_optimizers(self) -> dict[str, Optimizer]:
        cfg = self.config
        betas = (cfg["beta1"], cfg["beta2"])
        return {
            "discriminator": Adam(self.discriminator.parameters(), cfg["lr"], betas),
            "generator": Adam(self.generator.parameters(), cfg["lr"], betas),
        }

    def lr_factor(self, progress: float) -> float:
        """1 until ``lr_decay_start``, then linear decay to 0 at the end (pix2pix's schedule)."""
        return linear_decay(progress, self.config["lr_decay_start"])

    def reconstruction_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return self.config["lambda_l1"] * F.l1_loss(fake, real)

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        mode = self.config["gan_mode"]
        fake = self.generator(he)

        self.discriminator.requires_grad_(True)
        loss_d = discriminator_loss(
            self.discriminator(torch.cat([he, ihc], 1)),
            self.discriminator(torch.cat([he, fake.detach()], 1)),
            mode,
        )
        state.backward_step("discriminator", loss_d)

        self.discriminator.requires_grad_(False)
        loss_gan = generator_loss(self.discriminator(torch.cat([he, fake], 1)), mode)
        loss_rec = self.reconstruction_loss(fake, ihc)
        state.backward_step("generator", loss_gan + loss_rec)
        self.discriminator.requires_grad_(True)
        return {"d": loss_d.item(), "g_gan": loss_gan.item(), "g_rec": loss_rec.item()}


@register(
    "pyramid-pix2pix",
    configs={
        "small": {**_SMALL, **PYRAMID},
        "paper": {**_PAPER, **PYRAMID},
    },
    legacy=PYRAMID_LEGACY,
)
class PyramidPix2Pix(Pix2Pix):
    """PyramidPix2Pix (BCI): L1 summed over a Gaussian pyramid, ``pyramid_weights`` per level."""

    def __init__(self, card: ModelCard):
        check_pyramid_form(card.config["pyramid_form"], "pyramid_form")
        super().__init__(card)

    def reconstruction_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        cfg = self.config
        return gaussian_pyramid_l1(fake, real, cfg["pyramid_weights"], cfg["pyramid_form"])
