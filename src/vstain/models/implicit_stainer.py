"""ImplicitStainer (Kataria, Knudsen, Elhabian): local implicit functions for virtual IHC.

A convolutional encoder and a Swin Transformer encoder, both at full resolution, give per-pixel
features that are concatenated (``fuse="sum"``: added, as in the authors' released code). One MLP
shared by all pixels maps each pixel's (2k+1) x (2k+1) feature neighbourhood and its coordinates to
its IHC colour. Loss: L1 + ``lambda_perceptual`` x VGG16 perceptual loss; Adam, lr 1e-4.

``predict(he, uncertainty=True)`` adds the per-pixel standard deviation of the eight flipped /
rotated predictions (test-time augmentation). See docs/models/implicit_stainer.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Adam, Optimizer

from vstain.models.base import ModelCard, Prediction, StainModel, TrainState
from vstain.models.blocks.fullres_encoders import ConvEncoder, SwinEncoder
from vstain.models.blocks.local_implicit import LocalImplicitFunction
from vstain.models.blocks.receptive import receptive_field
from vstain.models.blocks.tta import dihedral_outputs
from vstain.models.perceptual import PerceptualLoss
from vstain.models.registry import register

ENCODERS = ("both", "conv", "swin")
FUSIONS = ("concat", "sum")
#: Tile windows start on multiples of this, so Swin windows and coordinate cells align globally.
GRID = 8

_PAPER = {
    "encoders": "both",
    "conv_channels": [32] * 3 + [64] * 3 + [128] * 3 + [256] * 3,
    "conv_norm": "none",
    "swin_dim": 256,
    "swin_depth": 6,
    "swin_heads": 8,
    "window_size": 8,
    "swin_mlp_ratio": 4.0,
    "fuse": "concat",
    "k": 1,
    "coords": "patch",
    "mlp_hidden": [256] * 4,
    "train_queries": 0,
    "lambda_perceptual": 1.0,
    "perceptual_backbone": "vgg16",
    "perceptual_layers": [3, 8, 15, 22],
    "lr": 1e-4,
}
_SMALL = {
    **_PAPER,
    "conv_channels": [16, 16, 32, 32, 32, 32],
    "conv_norm": "batch",  # without it the stain does not appear in a CPU budget (model doc)
    "swin_dim": 32,
    "swin_depth": 2,
    "swin_heads": 1,  # head width 32, as the paper's 256 / 8
    "coords": "cell",
    "mlp_hidden": [64] * 3,
    "perceptual_layers": [3, 8],
    "lr": 5e-4,  # a CPU budget of a few thousand steps (see the model doc)
}


def check_config(cfg: dict) -> None:
    """Raise ValueError naming the first problem of an ImplicitStainer config."""
    if cfg["encoders"] not in ENCODERS or cfg["fuse"] not in FUSIONS:
        raise ValueError(
            f"encoders must be one of {ENCODERS} and fuse one of {FUSIONS}, "
            f"got {cfg['encoders']!r} and {cfg['fuse']!r}"
        )
    summed = cfg["encoders"] == "both" and cfg["fuse"] == "sum"
    if summed and cfg["conv_channels"][-1] != cfg["swin_dim"]:
        raise ValueError(
            f'fuse="sum" needs conv_channels[-1] == swin_dim, got '
            f"{cfg['conv_channels'][-1]} and {cfg['swin_dim']}"
        )
    if GRID % cfg["window_size"]:
        raise ValueError(
            f"window_size must divide {GRID} (the tile alignment), got {cfg['window_size']}"
        )
    if cfg["train_queries"] < 0 or cfg["lambda_perceptual"] < 0:
        raise ValueError("train_queries and lambda_perceptual must be >= 0")
    if cfg["train_queries"] and cfg["lambda_perceptual"]:
        raise ValueError(
            "train_queries > 0 predicts scattered pixels, which leave no image for the perceptual "
            "loss; set lambda_perceptual to 0 or train_queries to 0 (all pixels)"
        )


def _sample_pixels(batch: int, pixels: int, n: int, device: torch.device) -> Tensor:
    """B x n distinct random flat pixel indices per image."""
    return torch.rand(batch, pixels, device=device).argsort(1)[:, :n]


@register(
    "implicit-stainer",
    configs={"small": _SMALL, "paper": _PAPER},
    legacy={"conv_norm": "none"},
)
class ImplicitStainer(StainModel):
    """Dual full-resolution encoder + local implicit function (shared per-pixel MLP)."""

    outputs = ("ihc", "uncertainty")
    optional_outputs: ClassVar[dict] = {"uncertainty": ("uncertainty", bool)}
    normalisation = "[0,1]"
    size_multiple = GRID

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = card.config
        check_config(cfg)
        use = cfg["encoders"]
        self.conv = (
            ConvEncoder(cfg["conv_channels"], norm=cfg["conv_norm"])
            if use in ("both", "conv")
            else None
        )
        self.swin = (
            SwinEncoder(
                cfg["swin_dim"],
                cfg["swin_depth"],
                cfg["swin_heads"],
                cfg["window_size"],
                cfg["swin_mlp_ratio"],
            )
            if use in ("both", "swin")
            else None
        )
        widths = [e.out_channels for e in self.encoders()]
        channels = widths[0] if cfg["fuse"] == "sum" else sum(widths)
        self.implicit = LocalImplicitFunction(
            channels, cfg["k"], cfg["mlp_hidden"], cfg["coords"], GRID
        )
        # frozen helpers kept out of the state dict (and so out of checkpoints)
        self._frozen: dict[str, PerceptualLoss] = {}

    def encoders(self) -> list:
        """The encoders in use, conv first."""
        return [e for e in (self.conv, self.swin) if e is not None]

    def features(self, x: Tensor) -> Tensor:
        """Fused per-pixel features B x C x H x W (concatenated or summed)."""
        feats = [e(x) for e in self.encoders()]
        return torch.stack(feats).sum(0) if self.config["fuse"] == "sum" else torch.cat(feats, 1)

    def receptive_halo(self) -> int:
        """Farthest encoder reach plus the neighbourhood radius k, up to a multiple of 8 px.

        With ``coords="patch"`` outputs also depend on the position in the input, which no halo
        makes tile-invariant (see the model doc).
        """
        reach = max(receptive_field(e)[0] for e in self.encoders()) + self.config["k"]
        return math.ceil(reach / GRID) * GRID

    def stain(self, x: Tensor) -> Tensor:
        """IHC (B x 3 x H x W, not clamped) for H&E ``x`` in [0, 1]."""
        return self.implicit(self.features(x))

    def infer(self, x: Tensor, uncertainty: bool = False) -> Prediction:
        """``ihc``; with ``uncertainty``, also the per-pixel std (mean over RGB, B x 1 x H x W) of
        the eight flipped / rotated predictions. ``ihc`` is the plain prediction either way."""
        if not uncertainty:
            return Prediction(ihc=self.stain(x))
        views = dihedral_outputs(self.stain, x)  # the identity first
        spread = views.clamp(0, 1).std(0, correction=0).mean(1, keepdim=True)
        return Prediction(ihc=views[0], uncertainty=spread)

    def configure_optimizers(self) -> dict[str, Optimizer]:
        return {"model": Adam(self.parameters(), lr=self.config["lr"])}

    def perceptual(self) -> PerceptualLoss:
        """The VGG16 perceptual loss, built on first use; records its backbone in the card."""
        if "perceptual" not in self._frozen:
            cfg = self.config
            loss = PerceptualLoss(cfg["perceptual_backbone"], cfg["perceptual_layers"])
            self._frozen["perceptual"] = loss
            self.card = replace(self.card, perceptual_backbone=loss.backbone_name)
        return self._frozen["perceptual"]

    def pixel_losses(self, feats: Tensor, ihc: Tensor) -> dict[str, Tensor]:
        """L1 at ``train_queries`` random pixels per image (no perceptual term there)."""
        b, _, h, w = ihc.shape
        index = _sample_pixels(b, h * w, min(self.config["train_queries"], h * w), ihc.device)
        real = ihc.flatten(2).gather(2, index[:, None, :].expand(-1, 3, -1))
        return {"l1": F.l1_loss(self.implicit.query(feats, index), real)}

    def image_losses(self, feats: Tensor, ihc: Tensor) -> dict[str, Tensor]:
        """L1 over all pixels and channels, and the perceptual loss when its weight is not 0."""
        fake = self.implicit(feats)
        losses = {"l1": F.l1_loss(fake, ihc)}
        if self.config["lambda_perceptual"]:
            losses["perceptual"] = self.perceptual().to(fake.device)(fake, ihc)
        return losses

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        feats = self.features(batch["he"])
        sampled = self.config["train_queries"] > 0
        losses = (self.pixel_losses if sampled else self.image_losses)(feats, batch["ihc"])
        total = losses["l1"] + self.config["lambda_perceptual"] * losses.get("perceptual", 0.0)
        state.backward_step("model", total)
        return {name: value.item() for name, value in losses.items()}
