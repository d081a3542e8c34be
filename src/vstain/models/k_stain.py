"""K-Stain (Yang et al.): keypoint-driven correspondence for misaligned H&E / IHC pairs.

HSKD detects keypoints on the H&E and on the IHC with one shared network and fits the affine
taking the H&E keypoints onto the IHC ones (Eq. 4); KEG generates the IHC from the H&E and a
Gaussian embedding of its keypoints; KGD judges IHC images together with their keypoints' embedding.
The generator loss is Eq. 17: non-saturating GAN + ``lambda_perc`` x VGG16 perceptual (squared L2
of features, Eq. 16) + ``lambda_kp`` x L1 between G(H&E warped by the affine) and the real IHC
(Eq. 15). See docs/models/k_stain.md for the readings of the paper and the tiling contract.

Not in the paper, off by default: the first ``hskd_pretrain_steps`` steps train HSKD alone, with
its own Adam, on pairs related by drawn affines (see ``pretrain_detector``). Trained end to end
only, the detector does not learn to register; this pretraining did not make it register either
(docs/models/k_stain.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Adam, Optimizer

from vstain.errors import ModelError
from vstain.models.base import ModelCard, Prediction, StainModel, TrainState, to_model_range
from vstain.models.blocks.affine import (
    apply_affine,
    corner_distance,
    fit_affine,
    random_affines,
    robust_fit_affine,
    to_normalised,
    to_pixel_affine,
    warp_affine,
)
from vstain.models.blocks.hskd import KeypointDetector
from vstain.models.blocks.keg import KeypointGenerator
from vstain.models.blocks.keypoints import KeypointEmbedding
from vstain.models.blocks.kgd import KeypointDiscriminator
from vstain.models.blocks.patchgan import PatchGANDiscriminator
from vstain.models.blocks.receptive import halo_for
from vstain.models.blocks.resnet_generator import STRIDE
from vstain.models.losses import discriminator_loss, generator_loss
from vstain.models.perceptual import PerceptualLoss
from vstain.models.registry import register

_SMALL = {
    "n_keypoints": 64,
    "hskd_channels": 16,
    "hskd_stages": 3,
    "hskd_dim": 64,
    "hskd_heads": 4,
    "hskd_layers": 1,
    "hskd_norm": "instance",
    # Not in the paper (docs/models/k_stain.md, "An HSKD that registers"): a Gaussian anchor prior
    # (0: none), each keypoint in its own cell of the anchor grid, keypoints on a stride-2 grid,
    # hematoxylin in ("rgb": the paper's), logits x gain, a Tukey-weighted Eq. 4 (0: plain), and
    # the first steps training HSKD alone on drawn affines with its own Adam at this rate.
    "hskd_prior": 0.0,
    "hskd_window": True,
    "hskd_fine": True,
    "hskd_input": "hematoxylin",
    "hskd_gain": 10.0,
    "robust_px": 4.0,
    "hskd_pretrain_steps": 600,
    "hskd_pretrain_lr": 1e-3,
    "ridge": 1e-2,
    "sigma": 1.0,
    "kse_channels": 1,
    "ngf": 16,
    "n_blocks": 3,
    "norm": "batch",
    "dropout": False,
    "ndf": 16,
    "n_layers_d": 3,
    "norm_d": "batch",
    "gan_mode": "nonsaturating",
    "lambda_perc": 1.0,
    "lambda_kp": 5.0,
    "perceptual_backbone": "vgg16",
    "perceptual_layers": [3, 8],
    "lr": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "keg": True,
    "kgd": True,
    # what KGD receives as H: "keypoints" (the paper) or "zero" (a control, not in the paper)
    "kgd_h": "keypoints",
    "align": True,
}
_PAPER = {
    **_SMALL,
    "n_keypoints": 128,
    "hskd_channels": 32,
    "hskd_stages": 4,
    "hskd_dim": 256,
    "hskd_heads": 8,
    # the paper's detector and Eq. 4 (the additions of `small` are off)
    "hskd_prior": 0.0,
    "hskd_window": False,
    "hskd_fine": False,
    "hskd_input": "rgb",
    "hskd_gain": 1.0,
    "robust_px": 0.0,
    "hskd_pretrain_steps": 0,
    "ngf": 64,
    "n_blocks": 6,
    "norm": "instance",
    "ndf": 64,
    "norm_d": "instance",
    "perceptual_layers": [3, 8, 15, 22],
}


#: The affines HSKD's pretraining draws (normalised coordinates, see ``random_affines``): more
#: than the adjacent sections' 2 degrees and 2 % in a tile, within the reach of the windows.
PRETRAIN_AFFINES = {"rotation": math.radians(5), "scale": 0.03, "shear": 0.03, "shift": 0.05}


@dataclass
class Correspondence:
    """HSKD's answer for an H&E / IHC pair, in each tile's pixel coordinates (x, y).

    ``affine`` (B x 3 x 3) takes H&E pixels to IHC pixels; ``displacement`` is IHC minus H&E
    keypoint, ``residual`` the IHC keypoint minus the affine's image of the H&E one (B x N x 2).
    """

    he_keypoints: Tensor
    ihc_keypoints: Tensor
    affine: Tensor
    displacement: Tensor
    residual: Tensor


@register(
    "k-stain",
    configs={"small": _SMALL, "paper": _PAPER},
    # checkpoints written before the anchor prior, the pretraining, the registering HSKD and kgd_h
    legacy={
        "hskd_prior": 0.0,
        "hskd_pretrain_steps": 0,
        "hskd_pretrain_lr": 1e-3,
        "hskd_window": False,
        "hskd_fine": False,
        "hskd_input": "rgb",
        "hskd_gain": 1.0,
        "robust_px": 0.0,
        "kgd_h": "keypoints",
    },
)
class KStain(StainModel):
    """HSKD keypoints + KEG generator + KGD discriminator, trained on misaligned pairs."""

    outputs = ("ihc", "keypoints")
    #: The detector's coarsest grid (up to 4 stride-2 stages).
    size_multiple = 16
    training_only = ("discriminator",)

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = card.config
        if not 1 <= cfg["hskd_stages"] <= 4:
            raise ValueError(f"hskd_stages must be 1 to 4, got {cfg['hskd_stages']}")
        if cfg["hskd_input"] not in ("rgb", "hematoxylin"):
            raise ValueError(f"hskd_input must be rgb or hematoxylin, got {cfg['hskd_input']!r}")
        if cfg["kgd_h"] not in ("keypoints", "zero"):
            raise ValueError(f"kgd_h must be keypoints or zero, got {cfg['kgd_h']!r}")
        if cfg["robust_px"] < 0:
            raise ValueError(f"robust_px must be >= 0 (0: plain Eq. 4), got {cfg['robust_px']}")
        self.detector = KeypointDetector(
            cfg["n_keypoints"],
            cfg["hskd_channels"],
            cfg["hskd_stages"],
            cfg["hskd_dim"],
            cfg["hskd_heads"],
            cfg["hskd_layers"],
            cfg["hskd_norm"],
            cfg["hskd_prior"],
            cfg["hskd_window"],
            cfg["hskd_fine"],
            cfg["hskd_input"] == "hematoxylin",
            cfg["hskd_gain"],
        )
        self.generator = KeypointGenerator(
            cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["dropout"], self._embedding("keg")
        )
        embedding = self._embedding("kgd")
        self.discriminator = (
            KeypointDiscriminator(
                cfg["ndf"], cfg["n_layers_d"], cfg["norm_d"], embedding, cfg["kgd_h"] == "zero"
            )
            if embedding is not None
            else PatchGANDiscriminator(3, cfg["ndf"], cfg["n_layers_d"], cfg["norm_d"])
        )
        self._perceptual: list[PerceptualLoss] = []  # a list keeps VGG out of the state dict

    def _embedding(self, switch: str) -> KeypointEmbedding | None:
        """A KSE for KEG or KGD, or None when the config switches it off (ablations)."""
        cfg = self.config
        if not cfg[switch]:
            return None
        # sigma is in cells of the 4-px grid of KEG's downsampled features (where H is fused)
        return KeypointEmbedding(cfg["n_keypoints"], cfg["kse_channels"], cfg["sigma"] * STRIDE)

    def receptive_halo(self) -> int:
        """KEG's reach for given keypoints; see :meth:`infer` for what tiling keeps."""
        return halo_for(self.generator, self.size_multiple)

    def infer(self, x: Tensor, keypoints: Tensor | None = None) -> Prediction:
        """IHC of ``x``, conditioned on its H&E keypoints (B x N x 2, (x, y) in ``x``'s pixels).

        Without ``keypoints`` they are detected on ``x`` itself, a softmax over the whole tile, so
        they depend on the tile's extent: only with the same keypoints given to every tile (in
        each tile's coordinates) does the centre crop of tiled output equal the whole-image one.
        """
        points = self.detector(x) if keypoints is None else self._checked(keypoints, x)
        return Prediction(ihc=self.generator(x, points), keypoints=points)

    def _checked(self, keypoints: Tensor, x: Tensor) -> Tensor:
        expected = (x.shape[0], self.config["n_keypoints"], 2)
        if not isinstance(keypoints, Tensor) or tuple(keypoints.shape) != expected:
            shape = tuple(keypoints.shape) if isinstance(keypoints, Tensor) else keypoints
            raise ModelError(
                f"k-stain needs keypoints as a B x N x 2 tensor of (x, y) pixels, here "
                f"{expected}, got {shape}. Pass the keypoints of an earlier prediction."
            )
        return keypoints.to(x)

    def correspond(self, he: Tensor, ihc: Tensor) -> Correspondence:
        """Keypoints of an H&E and an IHC tile (same size, [0, 1]), their affine, displacements."""
        for image in (he, ihc):
            self._check_input(image)
        if he.shape != ihc.shape:
            raise ModelError(
                f"k-stain matches tiles of one size, got H&E {tuple(he.shape)} and IHC "
                f"{tuple(ihc.shape)}. Cut the IHC tile to the H&E tile's size."
            )
        with self._evaluating():
            he_kp, ihc_kp, affine = self.align(
                to_model_range(he, self.normalisation), to_model_range(ihc, self.normalisation)
            )
        pixel_affine = to_pixel_affine(affine, he.shape[-2:])
        return Correspondence(
            he_kp, ihc_kp, pixel_affine, ihc_kp - he_kp, ihc_kp - apply_affine(pixel_affine, he_kp)
        )

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.train(was_training)

    def align(self, he: Tensor, ihc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """H&E and IHC keypoints (pixels) and the fitted affine in normalised coordinates (Eq. 4).

        Both images pass through the shared detector as one batch. With ``robust_px`` > 0 the fit
        is Tukey-weighted (``robust_fit_affine``), so keypoints that matched different tissue in
        the two sections are left out of it.
        """
        he_kp, ihc_kp = self.detector(torch.cat([he, ihc])).chunk(2)
        size = he.shape[-2:]
        src, dst = to_normalised(he_kp, size), to_normalised(ihc_kp, size)
        ridge, robust = self.config["ridge"], self.config["robust_px"]
        if robust:  # the Tukey scale in normalised units (half-sides)
            return he_kp, ihc_kp, robust_fit_affine(src, dst, ridge, robust * 2 / max(size))
        return he_kp, ihc_kp, fit_affine(src, dst, ridge)

    def configure_optimizers(self) -> dict[str, Optimizer]:
        cfg = self.config
        betas = (cfg["beta1"], cfg["beta2"])
        generator = [*self.generator.parameters(), *self.detector.parameters()]
        optimizers = {
            "discriminator": Adam(self.discriminator.parameters(), cfg["lr"], betas),
            "generator": Adam(generator, cfg["lr"], betas),
        }
        if cfg["hskd_pretrain_steps"]:  # HSKD's own, for its pretraining steps only
            rate = cfg["hskd_pretrain_lr"]
            optimizers["detector"] = Adam(self.detector.parameters(), rate, betas)
        return optimizers

    def perceptual(self, device: torch.device) -> PerceptualLoss:
        """The frozen VGG16 loss (built on first use; its backbone is recorded in the card)."""
        if not self._perceptual:
            cfg = self.config
            loss = PerceptualLoss(cfg["perceptual_backbone"], cfg["perceptual_layers"])
            self._perceptual.append(loss)
            self.card = replace(self.card, perceptual_backbone=loss.backbone_name)
        return self._perceptual[0].to(device)

    def perceptual_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """Eq. 16: mean squared distance of VGG16 features, images in [-1, 1]."""
        vgg = self.perceptual(fake.device)
        with torch.no_grad():
            targets = vgg.activations((real + 1) / 2)
        distances = [
            F.mse_loss(a, t) for a, t in zip(vgg.activations((fake + 1) / 2), targets, strict=True)
        ]
        return torch.stack(distances).mean()

    def discriminate(self, ihc: Tensor, points: Tensor) -> Tensor:
        """D(X, KSE(P)) logits (Eq. 12); keypoints reach the discriminator without gradient."""
        if isinstance(self.discriminator, KeypointDiscriminator):
            return self.discriminator(ihc, points.detach())
        return self.discriminator(ihc)

    def pretrain_detector(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        """One step of HSKD alone on pairs related by affines drawn from ``PRETRAIN_AFFINES``:
        each H&E crop against itself warped, each IHC crop against itself warped, and each H&E
        crop against its IHC crop warped (whose own misalignment is noise around the drawn
        affine; it teaches keypoints that match across the stains). Loss: the corner distance of
        the fitted affine from the drawn one plus the distance ``r`` of the keypoints found on the
        warped image from the drawn affine's image of the others (pixels, means); with
        ``robust_px`` = c > 0 the latter is saturated, ``c r^2 / (r^2 + c^2)``, so keypoints that
        found other tissue do not pull the detector towards heatmaps blurred between the two.
        Stepped by the ``detector`` optimiser."""
        he, ihc = (to_model_range(batch[k], self.normalisation) for k in ("he", "ihc"))
        sources, targets = torch.cat([he, ihc, he]), torch.cat([he, ihc, ihc])
        drawn = random_affines(sources.shape[0], **PRETRAIN_AFFINES, like=sources)
        kp, moved_kp, fitted = self.align(sources, warp_affine(targets, drawn))
        size = sources.shape[-2:]
        corners = corner_distance(fitted, drawn) * max(size) / 2
        expected = apply_affine(to_pixel_affine(drawn, size), kp)
        r = (moved_kp - expected).norm(dim=2)
        c = self.config["robust_px"]
        equivariance = (c * r**2 / (r**2 + c**2) if c else r).mean()
        state.backward_step("detector", corners.mean() + equivariance)
        return {
            "hskd_corner_px": corners.mean().item(),
            "hskd_cross_corner_px": corners[2 * he.shape[0] :].mean().item(),
            "hskd_keypoint_px": r.mean().item(),
        }

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        cfg = self.config
        if state.step < cfg["hskd_pretrain_steps"]:
            return self.pretrain_detector(batch, state)
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        he_kp, ihc_kp, affine = self.align(he, ihc)
        if cfg["align"]:  # G sees the H&E warped into the IHC's frame, with its keypoints moved
            he = warp_affine(he, affine)
            he_kp = apply_affine(to_pixel_affine(affine, he.shape[-2:]), he_kp)
        fake = self.generator(he, he_kp)

        self.discriminator.requires_grad_(True)
        loss_d = discriminator_loss(
            self.discriminate(ihc, ihc_kp),
            self.discriminate(fake.detach(), ihc_kp),
            cfg["gan_mode"],
        )
        state.backward_step("discriminator", loss_d)

        self.discriminator.requires_grad_(False)
        loss_adv = generator_loss(self.discriminate(fake, ihc_kp), cfg["gan_mode"])
        loss_perc = self.perceptual_loss(fake, ihc)
        loss_kp = F.l1_loss(fake, ihc)
        total = loss_adv + cfg["lambda_perc"] * loss_perc + cfg["lambda_kp"] * loss_kp
        state.backward_step("generator", total)
        self.discriminator.requires_grad_(True)
        return {
            "d": loss_d.item(),
            "g_adv": loss_adv.item(),
            "g_perc": loss_perc.item(),
            "g_kp": loss_kp.item(),
        }
