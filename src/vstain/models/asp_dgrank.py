"""ASP-DGRank (Khatua, Verma, Kumawat): attention-guided supervised patch ranking + Diffusion-GAN.

A CUT/ASP ResNet generator G; one projection MLP per contrastive layer shared by H&E, fake IHC and
real IHC features. The generator minimises (Eq. 8)

    lambda_gan GAN + lambda_nce PatchNCE(H&E, fake) + lambda_a2sp A2SP(real, fake) + lambda_gp GP

where A2SP samples patch locations by multinomial sampling over the L2 norm of the real-IHC encoder
features, reuses the locations for the fake IHC and weights each InfoNCE term with ASP's adaptive
weight (``lambda`` schedule x ``linear`` similarity lookup), and GP is ASP's Gaussian-pyramid L1.
The discriminator is a t-conditioned PatchGAN on forward-diffused real and fake IHC with an
adaptive number of diffusion steps, trained with least squares (Eq. 6-7). In the ``unpaired``
setting A2SP and GP, which need the real IHC at the same place, are off. See
docs/models/asp_dgrank.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from vstain.errors import ModelError
from vstain.models.base import (
    ModelCard,
    Prediction,
    StainModel,
    TrainState,
    linear_decay,
    to_model_range,
)
from vstain.models.blocks.adaptive_diffusion import AdaptiveDiffusion
from vstain.models.blocks.resnet_generator import STRIDE, ResnetGenerator
from vstain.models.blocks.time_patchgan import TimePatchGAN
from vstain.models.blocks.tta import DIHEDRAL, transform, untransform
from vstain.models.losses import (
    PatchSampleMLP,
    discriminator_loss,
    gaussian_pyramid_l1,
    generator_loss,
    patch_nce,
    patch_nce_loss,
)
from vstain.models.registry import register

SETTINGS = ("paired", "unpaired")
SAMPLINGS = ("attention", "uniform")
#: Generator terms that need the real IHC at the same place as the H&E (off when unpaired).
PAIRED_TERMS = ("g_a2sp", "g_gp")

_PAPER = {
    "setting": "paired",
    "ngf": 64,
    "n_blocks": 6,
    "norm": "instance",
    "dropout": False,
    "antialias": True,
    "antialias_up": True,
    "spectral_norm": False,
    "ndf": 64,
    "n_layers_d": 3,
    "norm_d": "instance",
    "t_embed_dim": 128,
    "nce_layers": [0, 4, 8, 12, 16],
    "num_patches": 256,
    "nce_dim": 256,
    "tau": 0.07,
    "a2sp_sampling": "attention",
    "lambda_gan": 1.0,
    "lambda_nce": 10.0,
    "lambda_a2sp": 10.0,
    "lambda_gp": 10.0,
    "pyramid_levels": 6,
    "diffusion": True,
    "beta_start": 1e-4,
    "beta_end": 2e-2,
    "noise_std": 0.05,
    "t_min": 10,
    "t_max": 1000,
    "ada_target": 0.6,
    "ada_interval": 4,
    "ada_kimg": 100.0,
    "lr": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "lr_decay_start": 40 / 45,
}
#: CPU: pix2pix-small's generator (ngf 16, 3 blocks, batch norm so tiles stitch exactly, stride-2
#: convs instead of blur pooling), taps at the same encoder stages in that layout (input, first and
#: second downsampling conv, first and last block), a smaller D and faster T adaptation.
_SMALL = {
    **_PAPER,
    "ngf": 16,
    "n_blocks": 3,
    "norm": "batch",
    "antialias": False,
    "antialias_up": False,
    "ndf": 16,
    "t_embed_dim": 32,
    "nce_layers": [0, 4, 7, 10, 12],
    "ada_kimg": 4.0,
}


def attention_map(feature: Tensor) -> Tensor:
    """Eq. 1: the L2 norm over channels of a B x C x H x W feature map -> B x H x W."""
    return feature.float().norm(dim=1)


def sample_locations(feature: Tensor, n: int, sampling: str = "attention") -> Tensor:
    """B x min(n, H W) distinct flat locations per image, multinomial over the attention or uniform.

    Locations of zero attention keep the smallest positive float weight, so a map with fewer than
    ``n`` non-zero locations still yields ``n`` distinct samples.
    """
    b, _, h, w = feature.shape
    k = min(n, h * w)
    if sampling == "uniform":
        return torch.rand(b, h * w, device=feature.device).argsort(dim=1)[:, :k]
    weights = attention_map(feature).flatten(1)
    return torch.multinomial(weights.clamp_min(torch.finfo(weights.dtype).tiny), k)


def project_at(
    sampler: PatchSampleMLP, features: Sequence[Tensor], ids: Sequence[Tensor]
) -> list[Tensor]:
    """Projected patches (B * P x nc per layer) at per-image locations ``ids`` (B x P per layer)."""
    per_image = [
        sampler([f[i : i + 1] for f in features], patch_ids=[idx[i] for idx in ids])[0]
        for i in range(features[0].shape[0])
    ]
    return [torch.cat(layer) for layer in zip(*per_image, strict=True)]


def asp_weights(similarity: Tensor, schedule: float) -> Tensor:
    """ASP's adaptive weights (B x P): ``schedule`` x 1 + (1 - ``schedule``) x relu(similarity),
    normalised to mean 1 over each image's patches (all-zero weights stay zero)."""
    w = schedule + (1 - schedule) * similarity.clamp_min(0)
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12) * w.shape[1]


def a2sp_pairs(
    sampler: PatchSampleMLP,
    feats_fake: Sequence[Tensor],
    feats_real: Sequence[Tensor],
    num_patches: int,
    sampling: str = "attention",
) -> tuple[list[Tensor], list[Tensor]]:
    """(fake, real) patch embeddings per layer at locations sampled from the real features."""
    ids = [sample_locations(f, num_patches, sampling) for f in feats_real]
    return project_at(sampler, feats_fake, ids), project_at(sampler, feats_real, ids)


def a2sp_loss(
    sampler: PatchSampleMLP,
    feats_fake: Sequence[Tensor],
    feats_real: Sequence[Tensor],
    schedule: float,
    num_patches: int = 256,
    tau: float = 0.07,
    sampling: str = "attention",
) -> Tensor:
    """Eq. 2-3: adaptively weighted InfoNCE of fake vs real patches, mean over patches, layers."""
    batch = feats_real[0].shape[0]
    queries, keys = a2sp_pairs(sampler, feats_fake, feats_real, num_patches, sampling)
    losses = []
    for q, k in zip(queries, keys, strict=True):
        nce = patch_nce_loss(q, k, batch, tau, reduction="none").view(batch, -1)
        similarity = (q * k).sum(dim=1).detach().view(batch, -1)
        losses.append((asp_weights(similarity, schedule) * nce).mean())
    return torch.stack(losses).mean()


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Batch norms keep normalising with batch statistics but do not update their running ones."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def _check_config(cfg: dict) -> None:
    if cfg["setting"] not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {cfg['setting']!r}")
    if cfg["a2sp_sampling"] not in SAMPLINGS:
        raise ValueError(f"a2sp_sampling must be one of {SAMPLINGS}, got {cfg['a2sp_sampling']!r}")
    if not 0 <= cfg["lr_decay_start"] < 1:
        raise ValueError(f"lr_decay_start must be in [0, 1), got {cfg['lr_decay_start']}")
    if cfg["num_patches"] < 1 or cfg["pyramid_levels"] < 1:
        raise ValueError("num_patches and pyramid_levels must be >= 1")


#: Table 5 at small size: baseline (no diffusion, no attention module), + DM only, + AM only.
_ABLATIONS = {
    "small-baseline": {**_SMALL, "diffusion": False, "lambda_a2sp": 0.0},
    "small-dm": {**_SMALL, "lambda_a2sp": 0.0},
    "small-am": {**_SMALL, "diffusion": False},
}
_CONFIGS = {
    "small": _SMALL,
    "paper": _PAPER,
    "small-unpaired": {**_SMALL, "setting": "unpaired"},
    "paper-unpaired": {**_PAPER, "setting": "unpaired"},
    **_ABLATIONS,
}


@register("asp-dgrank", configs=_CONFIGS)
class AspDGRank(StainModel):
    """ASP-DGRank: ResNet generator, PatchNCE + A2SP + pyramid L1, diffusion-regularised D."""

    outputs = ("ihc", "uncertainty", "attention")
    optional_outputs: ClassVar[dict] = {
        "uncertainty": ("tta", lambda n: n > 1),
        "attention": ("reference", lambda r: r is not None),
    }
    size_multiple = STRIDE
    training_only = ("sampler", "discriminator")

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = card.config
        _check_config(cfg)
        self.generator = ResnetGenerator.from_config(cfg)
        self.layers = list(cfg["nce_layers"])
        self.sampler = PatchSampleMLP(self.generator.feature_channels(self.layers), cfg["nce_dim"])
        self.discriminator = TimePatchGAN(
            3, cfg["ndf"], cfg["n_layers_d"], cfg["norm_d"], cfg["t_embed_dim"]
        )
        self.diffusion = (
            AdaptiveDiffusion(
                cfg["beta_start"],
                cfg["beta_end"],
                cfg["noise_std"],
                cfg["t_min"],
                cfg["t_max"],
                cfg["ada_target"],
                cfg["ada_interval"],
                cfg["ada_kimg"],
            )
            if cfg["diffusion"]
            else None
        )

    def receptive_halo(self) -> int:
        return self.generator.halo()

    # ---- inference -------------------------------------------------------------------------

    def infer(self, x: Tensor, tta: int = 1, reference: Tensor | None = None) -> Prediction:
        """Virtual IHC; with ``tta`` > 1 the mean over that many flips/rotations and their spread
        (``uncertainty``, std in [0, 1] units); with a ``reference`` IHC in [0, 1] (the shape of the
        H&E) its attention maps (``attention``, B x layers x H x W, each scaled to max 1)."""
        if not 1 <= tta <= len(DIHEDRAL):
            raise ModelError(f"tta must be 1 .. {len(DIHEDRAL)} augmentations, got {tta}.")
        outs = torch.stack(
            [untransform(self.generator(transform(x, t, f)), t, f) for t, f in DIHEDRAL[:tta]]
        )
        spread = (outs.std(0) / 2).mean(1, keepdim=True) if tta > 1 else None
        attention = None if reference is None else self.attention_maps(reference, x)
        return Prediction(ihc=outs.mean(0), uncertainty=spread, attention=attention)

    def attention_maps(self, reference: Tensor, he: Tensor) -> Tensor:
        """Per-layer attention of a real IHC in [0, 1] at the H&E ``he``'s size, max 1 per map."""
        shape = he.shape
        if not isinstance(reference, Tensor) or reference.shape != shape:
            got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference)
            raise ModelError(
                f"reference must be the real IHC as a tensor shaped like the H&E {tuple(shape)}, "
                f"got {got}; register and crop it to the H&E first."
            )
        ref = to_model_range(reference.to(he), self.normalisation)
        maps = []
        for feat in self.generator.encode(ref, self.layers):
            c = max((feat.shape[-1] - shape[-1]) // 2, 0)  # layer 0 is the reflect-padded input
            att = attention_map(feat[..., c : feat.shape[-2] - c, c : feat.shape[-1] - c])
            maps.append(F.interpolate(att[:, None], size=shape[-2:], mode="bilinear"))
        maps = torch.cat(maps, dim=1)
        return maps / maps.flatten(2).amax(2).clamp_min(1e-12)[..., None, None]

    # ---- training --------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Optimizer]:
        cfg = self.config
        betas = (cfg["beta1"], cfg["beta2"])
        generator = [*self.generator.parameters(), *self.sampler.parameters()]
        return {
            "discriminator": Adam(self.discriminator.parameters(), cfg["lr"], betas),
            "generator": Adam(generator, cfg["lr"], betas),
        }

    def lr_factor(self, progress: float) -> float:
        """Constant, then linear decay to 0 from ``lr_decay_start`` (40 + 5 epochs in the paper)."""
        return linear_decay(progress, self.config["lr_decay_start"])

    def diffuse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """D's input and step: forward-diffused, or the clean image at t = 0 without diffusion."""
        if self.diffusion is None:
            return x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.diffusion(x)

    def term_weights(self) -> dict[str, float]:
        """Eq. 8's lambda of each generator loss term, by the term's logged name."""
        return {f"g_{k}": self.config[f"lambda_{k}"] for k in ("gan", "nce", "a2sp", "gp")}

    def active_terms(self) -> list[str]:
        """Generator loss terms this config computes (weight > 0, pair terms only when paired)."""
        unpaired = self.config["setting"] == "unpaired"
        weights = self.term_weights()
        return [k for k, w in weights.items() if w > 0 and not (unpaired and k in PAIRED_TERMS)]

    def encode(self, x: Tensor) -> list[Tensor]:
        """Contrastive-layer features of ``x`` without touching batch-norm running statistics."""
        with frozen_running_stats(self.generator):
            return self.generator.encode(x, self.layers)

    def generator_terms(
        self, ihc: Tensor, fake: Tensor, feats_he: Sequence[Tensor], progress: float
    ) -> dict[str, Tensor]:
        """The unweighted active generator losses for one batch (model range images)."""
        cfg = self.config
        active = self.active_terms()
        terms = {}
        if "g_gan" in active:
            terms["g_gan"] = generator_loss(self.discriminator(*self.diffuse(fake)), "lsgan")
        feats_fake = self.encode(fake) if {"g_nce", "g_a2sp"} & set(active) else None
        if "g_nce" in active:
            terms["g_nce"] = patch_nce(
                self.sampler, feats_fake, feats_he, cfg["num_patches"], cfg["tau"]
            )
        if "g_a2sp" in active:
            with torch.no_grad():
                feats_real = self.encode(ihc)
            terms["g_a2sp"] = a2sp_loss(
                self.sampler,
                feats_fake,
                feats_real,
                linear_decay(progress, cfg["lr_decay_start"]),
                cfg["num_patches"],
                cfg["tau"],
                cfg["a2sp_sampling"],
            )
        if "g_gp" in active:
            levels = cfg["pyramid_levels"]
            terms["g_gp"] = gaussian_pyramid_l1(fake, ihc, [1 / levels] * levels, "asp")
        return terms

    def _check_crop(self, x: Tensor) -> None:
        need = 2 ** self.config["pyramid_levels"]
        if "g_gp" in self.active_terms() and min(x.shape[-2:]) < need:
            raise ModelError(
                f"asp-dgrank's {self.config['pyramid_levels']}-level Gaussian pyramid needs "
                f"training crops of at least {need} px, got {tuple(x.shape[-2:])}; use a larger "
                "--crop or fewer pyramid_levels."
            )

    def _discriminator_step(self, ihc: Tensor, fake: Tensor, state: TrainState) -> Tensor:
        """Eq. 6 on diffused real and (detached) fake IHC; then T adapts to D's outputs on real."""
        d_real = self.discriminator(*self.diffuse(ihc))
        d_fake = self.discriminator(*self.diffuse(fake.detach()))
        loss = discriminator_loss(d_real, d_fake, "lsgan")
        state.backward_step("discriminator", loss)
        if self.diffusion is not None:
            self.diffusion.observe(d_real.detach())
        return loss

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        self._check_crop(he)
        fake, feats_he = self.generator(he, self.layers)
        loss_d = self._discriminator_step(ihc, fake, state)
        self.discriminator.requires_grad_(False)
        try:
            terms = self.generator_terms(ihc, fake, feats_he, state.progress)
            weights = self.term_weights()
            state.backward_step("generator", sum(weights[k] * v for k, v in terms.items()))
        finally:
            self.discriminator.requires_grad_(True)
        logged = {"d": loss_d.item(), **{k: v.item() for k, v in terms.items()}}
        if self.diffusion is not None:
            logged["diffusion_T"] = float(self.diffusion.steps)
        return logged
