"""StainDiffuser and its bidirectional and multi-stain variants: one implementation, three names.

Each variant is an H&E encoder (F1..F4) and a set of denoising UNets ("branches") whose encoder
features are modulated at every scale by their own attention gates on F1..F4:

- ``stain-diffuser``: ``generation`` (noisy IHC -> noise) and ``segmentation`` (noisy coarse
  mask or signed distance -> noise); L = L_gen + lambda_seg L_seg.
- ``stain-diffuser-bidirectional``: one ``generation`` UNet told the direction by an embedding;
  each sample goes H&E -> IHC or IHC -> H&E (alternating along the batch), the encoder sees the
  source image.
- ``stain-diffuser-multi``: one ``marker<i>`` UNet per marker; each sample carries ``marker``
  (index into the card's markers) and trains only its branch; L = sum_i lambda_i L_i.

All losses are epsilon-prediction MSE at a step drawn uniformly from 0 .. T - 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torch.optim import Adam, Optimizer

from vstain.color.dab_mask import coarse_dab_mask, signed_distance
from vstain.errors import ModelError
from vstain.models.base import (
    ModelCard,
    Prediction,
    StainModel,
    TrainState,
    linear_decay,
    to_model_range,
)
from vstain.models.registry import register
from vstain.models.stain_diffuser.networks import LEVELS, DenoisingUNet, Encoder, unet_radius
from vstain.models.stain_diffuser.noise import batch_noise
from vstain.models.stain_diffuser.samplers import SAMPLERS, Sampler
from vstain.models.stain_diffuser.schedule import LinearSchedule

AUX_TARGETS = ("mask", "distance", "none")
#: What the UNet outputs: the noise (the paper) or the clean image, turned into its noise.
PARAMETRISATIONS = ("eps", "x0")
#: "eps": the paper's noise MSE. "x0": the same MSE divided by SNR(t), which is the MSE of the
#: implied clean image (noise MSE = SNR(t) x clean-image MSE); it weights every step alike.
LOSS_WEIGHTS = ("eps", "x0")

_BASE_SMALL = {
    "channels": [16, 32, 64, 64],
    "res_blocks": 1,
    "timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "lr": 2e-4,
    "noise_draws": 1,
    "norm": "channel",
    "he_norm": "channel",
    "loss_weight": "x0",
    "parametrisation": "x0",
    "lr_decay_start": 1.0,
}
_BASE_PAPER = {
    **_BASE_SMALL,
    "channels": [64, 128, 256, 512],
    "res_blocks": 2,
    "timesteps": 2000,
    "lr": 1e-4,
    "loss_weight": "eps",
    "parametrisation": "eps",
}

#: What checkpoints written before a config key existed were trained with.
_LEGACY = {"he_norm": "channel", "loss_weight": "eps"}


def _origins(origin, batch: int) -> list[tuple[int, int]]:
    """One (y, x) per item from a single (y, x) or a sequence of ``batch`` of them."""
    items = np.asarray(origin, dtype=np.int64)
    if items.shape == (2,):
        items = np.broadcast_to(items, (batch, 2))
    if items.shape != (batch, 2):
        raise ModelError(
            f"origin must be the (y, x) of the tile's top-left pixel on the slide, or one (y, x) "
            f"per batch item ({batch}), got {origin!r}."
        )
    return [(int(y), int(x)) for y, x in items]


class StainDiffuser(StainModel):
    """The shared machinery: encoder, branches, q-sample loss and the seeded sampler."""

    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {"sampler": SAMPLERS}

    outputs = ("ihc", "uncertainty")
    optional_outputs: ClassVar[dict] = {"uncertainty": ("n_samples", lambda n: n > 1)}
    normalisation = "[-1,1]"
    size_multiple = 2 ** (LEVELS - 1)

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = card.config
        if cfg["parametrisation"] not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}")
        if cfg["loss_weight"] not in LOSS_WEIGHTS:
            raise ValueError(f"loss_weight must be one of {LOSS_WEIGHTS}")
        self.schedule = LinearSchedule(cfg["timesteps"], cfg["beta_start"], cfg["beta_end"])
        self.encoder = Encoder(3, cfg["channels"], cfg["res_blocks"], norm=cfg["he_norm"])
        self.branches = torch.nn.ModuleDict(
            {
                name: DenoisingUNet(
                    c, cfg["channels"], cfg["res_blocks"], cfg["channels"], d, cfg["norm"]
                )
                for name, (c, d) in self.branch_specs().items()
            }
        )

    def branch_specs(self) -> dict[str, tuple[int, int]]:
        """Branch name -> (image channels, number of directions; 0: none)."""
        return {"generation": (3, 0)}

    def receptive_halo(self) -> int:
        """Radius of one UNet evaluation rounded up to the stride (many steps see further: docs)."""
        m = self.size_multiple
        radius = max(unet_radius(self.encoder, unet) for unet in self.branches.values())
        return math.ceil(radius / m) * m

    def configure_optimizers(self) -> dict[str, Optimizer]:
        return {"model": Adam(self.parameters(), self.config["lr"], foreach=True)}

    def lr_factor(self, progress: float) -> float:
        """Constant (the paper), or linear decay to 0 from ``lr_decay_start`` when below 1."""
        return linear_decay(progress, self.config["lr_decay_start"])

    def denoising_loss(
        self, branch: str, feats: list[Tensor], x0: Tensor, direction: Tensor | None = None
    ) -> Tensor:
        """Epsilon-prediction MSE of ``branch`` on clean ``x0`` at uniformly drawn steps, each
        image's weighted by ``loss_weight``.

        Each image is noised ``noise_draws`` times (own step and noise each): a larger batch of
        draws for the same encoder pass, which lowers the variance of the estimate.
        """
        k = self.config["noise_draws"]
        if k > 1:
            x0, feats = x0.repeat(k, 1, 1, 1), [f.repeat(k, 1, 1, 1) for f in feats]
            direction = None if direction is None else direction.repeat(k)
        t = torch.randint(0, self.schedule.timesteps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, eps)
        noise = self.predict_noise(branch, x_t, t, feats, direction)
        if self.config["loss_weight"] == "eps":
            return F.mse_loss(noise, eps)
        weights = (1 / self.schedule.snr(t)).to(noise)  # see LOSS_WEIGHTS
        return ((noise - eps).pow(2).mean((1, 2, 3)) * weights).mean()

    def predict_noise(
        self, branch: str, x_t: Tensor, t: Tensor, feats: list[Tensor], direction=None
    ) -> Tensor:
        """``branch``'s noise estimate; with ``parametrisation`` "x0" the UNet's output is read as
        the clean image and turned into the noise it implies (the loss stays epsilon MSE)."""
        out = self.branches[branch](x_t, t, feats, direction)
        if self.config["parametrisation"] == "eps":
            return out
        return self.schedule.eps_from_x0(x_t, t, out)

    def sample(
        self,
        branch: str,
        feats: list[Tensor],
        channels: int,
        *,
        steps: int,
        sampler: str,
        seed: int,
        sample: int,
        origins: list[tuple[int, int]],
        direction: Tensor | None = None,
    ) -> Tensor:
        """One sample of ``branch`` (B x channels x H x W in [-1, 1]) from position-seeded noise."""
        stream = (seed, sample, list(self.branches).index(branch))
        b, _, h, w = feats[0].shape
        shape = torch.Size((b, channels, h, w))
        x = batch_noise((*stream, 0), shape, origins, feats[0])
        solver = Sampler(self.schedule, sampler, steps)
        for k, t in enumerate(solver.timesteps):
            step = torch.full((b,), t, device=x.device)
            eps = self.predict_noise(branch, x, step, feats, direction)
            noise = batch_noise((*stream, k + 1), shape, origins, x) if solver.stochastic else None
            x = solver.step(x, eps, t, noise)
        return x

    def samples(self, branch, feats, channels, n_samples, **options) -> Tensor:
        """``n_samples`` samples stacked: n x B x C x H x W."""
        return torch.stack(
            [self.sample(branch, feats, channels, sample=s, **options) for s in range(n_samples)]
        )

    def sampling_options(
        self, x: Tensor, steps: int, sampler: str, n_samples: int, seed: int, origin
    ) -> dict:
        """Checked sampler options for :meth:`samples`."""
        if not 1 <= steps <= self.schedule.timesteps:
            raise ModelError(
                f"steps must be between 1 and the model's {self.schedule.timesteps} diffusion "
                f"steps, got {steps}."
            )
        if n_samples < 1 or seed < 0:
            raise ModelError(f"need n_samples >= 1 and seed >= 0, got {n_samples} and {seed}.")
        origins = _origins(origin, x.shape[0])
        return {"steps": steps, "sampler": sampler, "seed": seed, "origins": origins}

    def stain(self, branch: str, cond: Tensor, n_samples: int, options: dict, **kw):
        """``(mean, uncertainty)`` of ``n_samples`` IHC samples; uncertainty in [0, 1] units."""
        draws = self.samples(branch, self.encoder(cond), 3, n_samples, **options, **kw)
        spread = draws.std(0).mean(1, keepdim=True) / 2 if n_samples > 1 else None
        return draws.mean(0), spread

    def infer(
        self,
        x: Tensor,
        steps: int = 50,
        sampler: str = "ddim",
        n_samples: int = 1,
        seed: int = 0,
        origin: Sequence[int] = (0, 0),
    ) -> Prediction:
        """Virtual IHC by ``sampler`` ("ddim", "dpm-solver++": deterministic; "ddpm": ancestral)
        in ``steps`` network evaluations.

        ``origin``: (y, x) of the tile on the slide, so that overlapping tiles share noise.
        """
        options = self.sampling_options(x, steps, sampler, n_samples, seed, origin)
        ihc, spread = self.stain("generation", x, n_samples, options)
        return Prediction(ihc=ihc, uncertainty=spread)

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        loss = self.denoising_loss("generation", self.encoder(he), ihc)
        state.backward_step("model", loss)
        return {"gen": loss.item()}


def coarse_masks(ihc: Tensor) -> Tensor:
    """Coarse DAB masks (B x 1 x H x W, 0 / 1) of IHC images in [0, 1], thresholded per image."""
    rgb = (ihc.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    masks = [coarse_dab_mask(im) for im in rgb]
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)).to(ihc.device)


def instance_labels(mask: Tensor) -> Tensor:
    """B x 1 x H x W boolean -> int64 labels of each image's 4-connected components."""
    labels = [ndimage.label(m[0].cpu().numpy())[0] for m in mask]
    return torch.from_numpy(np.stack(labels)[:, None].astype(np.int64)).to(mask.device)


@register(
    "stain-diffuser",
    configs={
        "small": {**_BASE_SMALL, "aux_target": "mask", "lambda_seg": 1.0},
        "paper": {**_BASE_PAPER, "aux_target": "mask", "lambda_seg": 1.0},
    },
    legacy=_LEGACY,
)
class MultitaskStainDiffuser(StainDiffuser):
    """IHC generation + auxiliary segmentation (coarse mask or signed distance) diffusion."""

    outputs = ("ihc", "segmentation", "uncertainty")
    optional_outputs: ClassVar[dict] = {
        **StainDiffuser.optional_outputs,
        "segmentation": ("segment", bool),
    }

    def __init__(self, card: ModelCard):
        if card.config["aux_target"] not in AUX_TARGETS:
            raise ValueError(f"aux_target must be one of {AUX_TARGETS}")
        super().__init__(card)

    def branch_specs(self) -> dict[str, tuple[int, int]]:
        aux = {} if self.config["aux_target"] == "none" else {"segmentation": (1, 0)}
        return {"generation": (3, 0), **aux}

    @property
    def trains_on_dab_masks(self) -> bool:
        return self.config["aux_target"] != "none"

    def aux_target(self, batch: dict[str, Tensor]) -> Tensor:
        """The segmentation branch's clean image in [-1, 1]: mask or signed distance."""
        mask = batch["mask"] if "mask" in batch else coarse_masks(batch["ihc"])
        if self.config["aux_target"] == "mask":
            return mask * 2 - 1
        distance = [signed_distance(m[0].cpu().numpy() > 0.5) for m in mask]
        return torch.from_numpy(np.stack(distance)[:, None]).to(mask)

    def infer(
        self,
        x: Tensor,
        steps: int = 50,
        sampler: str = "ddim",
        n_samples: int = 1,
        seed: int = 0,
        origin: Sequence[int] = (0, 0),
        segment: bool = False,
    ) -> Prediction:
        """As :meth:`StainDiffuser.infer`; ``segment`` also samples the segmentation branch and
        gives ``segmentation``: instance labels (int64, 0 background) of the connected components
        where the samples' mean foreground probability exceeds one half."""
        pred = super().infer(x, steps, sampler, n_samples, seed, origin)
        if not segment:
            return pred
        if "segmentation" not in self.branches:
            raise ModelError("This model was trained without an auxiliary task (aux_target none).")
        options = self.sampling_options(x, steps, sampler, n_samples, seed, origin)
        draws = self.samples("segmentation", self.encoder(x), 1, n_samples, **options)
        foreground = ((draws + 1) / 2).clamp(0, 1).mean(0) > 0.5
        pred.segmentation = instance_labels(foreground)
        return pred

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        feats = self.encoder(he)
        loss_gen = self.denoising_loss("generation", feats, ihc)
        losses, loss = {"gen": loss_gen.item()}, loss_gen
        if "segmentation" in self.branches:
            loss_seg = self.denoising_loss("segmentation", feats, self.aux_target(batch))
            loss = loss + self.config["lambda_seg"] * loss_seg
            losses["seg"] = loss_seg.item()
        state.backward_step("model", loss)
        return losses


@register(
    "stain-diffuser-bidirectional",
    configs={"small": dict(_BASE_SMALL), "paper": dict(_BASE_PAPER)},
    legacy=_LEGACY,
)
class BidirectionalStainDiffuser(StainDiffuser):
    """One encoder and one UNet for H&E -> IHC (direction 0) and IHC -> H&E (direction 1)."""

    def branch_specs(self) -> dict[str, tuple[int, int]]:
        return {"generation": (3, 2)}

    def stain(self, branch, cond, n_samples, options, **kw):
        forward = torch.zeros(cond.shape[0], dtype=torch.long, device=cond.device)
        return super().stain(branch, cond, n_samples, options, direction=forward, **kw)

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        first = torch.randint(0, 2, (1,), device=he.device)
        direction = (torch.arange(he.shape[0], device=he.device) + first) % 2
        reverse = direction.bool().view(-1, 1, 1, 1)
        source, target = torch.where(reverse, ihc, he), torch.where(reverse, he, ihc)
        loss = self.denoising_loss("generation", self.encoder(source), target, direction)
        state.backward_step("model", loss)
        return {"gen": loss.item(), "reverse_fraction": reverse.float().mean().item()}


@register(
    "stain-diffuser-multi",
    configs={
        "small": {**_BASE_SMALL, "n_markers": 3, "marker_weights": [1.0, 1.0, 1.0]},
        "paper": {**_BASE_PAPER, "n_markers": 2, "marker_weights": [1.0, 1.0]},
    },
    legacy=_LEGACY,
)
class MultiStainDiffuser(StainDiffuser):
    """One H&E encoder, one generation UNet (with its own attention gates) per marker."""

    def __init__(self, card: ModelCard):
        cfg = card.config
        n = cfg["n_markers"]
        if not isinstance(n, int) or n < 1 or len(cfg["marker_weights"]) != n:
            raise ValueError("n_markers must be >= 1 with one marker_weights entry per marker")
        if card.markers and len(card.markers) != n:
            raise ValueError(f"the card names {len(card.markers)} markers but n_markers is {n}")
        super().__init__(card)

    def branch_specs(self) -> dict[str, tuple[int, int]]:
        return {f"marker{i}": (3, 0) for i in range(self.config["n_markers"])}

    def marker_index(self, marker: int | str) -> int:
        """Index of ``marker`` (an index or one of the card's marker names)."""
        names = self.card.markers
        if isinstance(marker, str) and marker in names:
            return names.index(marker)
        if isinstance(marker, int) and 0 <= marker < self.config["n_markers"]:
            return marker
        raise ModelError(
            f"Unknown marker {marker!r}: give an index below {self.config['n_markers']}"
            + (f" or one of {names}." if names else ".")
        )

    def infer(
        self,
        x: Tensor,
        steps: int = 50,
        sampler: str = "ddim",
        n_samples: int = 1,
        seed: int = 0,
        origin: Sequence[int] = (0, 0),
        marker: int | str = 0,
    ) -> Prediction:
        """As :meth:`StainDiffuser.infer` for ``marker`` (index or name); see
        :meth:`predict_markers` for all of them."""
        options = self.sampling_options(x, steps, sampler, n_samples, seed, origin)
        branch = f"marker{self.marker_index(marker)}"
        ihc, spread = self.stain(branch, x, n_samples, options)
        return Prediction(ihc=ihc, uncertainty=spread)

    def predict_markers(self, he: Tensor, **options) -> dict[str, Prediction]:
        """Every marker's prediction for one H&E batch, by marker name (or index if unnamed)."""
        names = self.card.markers or [str(i) for i in range(self.config["n_markers"])]
        return {name: self.predict(he, marker=i, **options) for i, name in enumerate(names)}

    def training_step(self, batch: dict[str, Tensor], state: TrainState) -> dict[str, float]:
        n = self.config["n_markers"]
        if "marker" not in batch and n > 1:
            raise ModelError(
                f"stain-diffuser-multi has {n} markers and needs each sample's 'marker' index in "
                "the batch; build the data with vstain.train.datasets.MarkerDataset."
            )
        he = to_model_range(batch["he"], self.normalisation)
        ihc = to_model_range(batch["ihc"], self.normalisation)
        markers = batch.get("marker", torch.zeros(he.shape[0], dtype=torch.long))
        markers = torch.as_tensor(markers, device=he.device).long()
        if markers.min() < 0 or markers.max() >= n:
            raise ModelError(f"marker indices must be in 0 .. {n - 1}, got {markers.tolist()}.")
        feats = self.encoder(he)
        loss, losses = 0.0, {}
        for i in markers.unique().tolist():
            rows = markers == i
            part = self.denoising_loss(f"marker{i}", [f[rows] for f in feats], ihc[rows])
            loss = loss + self.config["marker_weights"][i] * part
            losses[f"gen_{i}"] = part.item()
        state.backward_step("model", loss)
        return losses
