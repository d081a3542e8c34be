"""Training losses: GAN objectives, Gaussian-pyramid L1 and PatchNCE with its projection heads.

GAN losses take discriminator logits. ``"lsgan"`` is least squares (targets 1 / 0);
``"nonsaturating"`` is the cross-entropy GAN with the non-saturating generator loss, identical to
pix2pix's ``gan_mode="vanilla"`` (BCE-with-logits against the "real" label).

This module imports nothing from ``vstain.models`` (models import it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAN_MODES = ("lsgan", "nonsaturating")
PYRAMID_FORMS = ("pyramidpix2pix", "asp")


def _check_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ValueError(f"GAN mode must be one of {GAN_MODES}, got {mode!r}")


def discriminator_loss(real: Tensor, fake: Tensor, mode: str) -> Tensor:
    """Discriminator loss on logits of real and fake samples, halved as in pix2pix."""
    _check_mode(mode)
    if mode == "lsgan":
        return 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_loss(fake: Tensor, mode: str) -> Tensor:
    """Generator loss on the discriminator's logits of fake samples."""
    _check_mode(mode)
    if mode == "lsgan":
        return ((fake - 1) ** 2).mean()
    return F.softplus(-fake).mean()


def _gaussian_row(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    row = torch.exp(-(x**2) / (2 * sigma**2))
    return row / row.sum()


#: PyramidPix2Pix blur: 3-tap Gaussian, sigma 1 (kornia ``gaussian_blur2d((3, 3), (1, 1))``).
GAUSS3 = _gaussian_row(3, 1.0)
#: ASP / LPTN blur: 5-tap binomial [1, 4, 6, 4, 1] / 16.
BINOMIAL5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def blur(x: Tensor, row: Tensor) -> Tensor:
    """Separable per-channel blur with the 1-D kernel ``row``, reflect-padded (same size)."""
    p = row.numel() // 2
    c = x.shape[1]
    kernel = (row[:, None] * row[None, :]).to(x)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), kernel, groups=c)


def check_pyramid_form(form: object, name: str = "pyramid form") -> None:
    """Raise ValueError unless ``form`` is one of `PYRAMID_FORMS`."""
    if form not in PYRAMID_FORMS:
        raise ValueError(f"{name} must be one of {PYRAMID_FORMS}, got {form!r}")


def gaussian_pyramid(x: Tensor, levels: int, form: str = "pyramidpix2pix") -> list[Tensor]:
    """``levels`` images, finest first.

    ``"pyramidpix2pix"`` (BCI): the image itself, then repeatedly 4 x Gaussian-3 blur and keep every
    second pixel. ``"asp"`` (ASP / LPTN): the binomial-5 blurred image at each scale, each next
    scale every second pixel of the blurred one; the last level is the coarsest image unblurred.
    """
    check_pyramid_form(form)
    out = []
    if form == "pyramidpix2pix":
        out.append(x)
        for _ in range(levels - 1):
            for _ in range(4):
                x = blur(x, GAUSS3)
            x = x[:, :, ::2, ::2]
            out.append(x)
        return out
    for _ in range(levels - 1):
        x = blur(x, BINOMIAL5)
        out.append(x)
        x = x[:, :, ::2, ::2]
    out.append(x)
    return out


def gaussian_pyramid_l1(
    fake: Tensor, real: Tensor, weights: Sequence[float], form: str = "pyramidpix2pix"
) -> Tensor:
    """Sum over pyramid levels of ``weights[i]`` x mean L1 between the levels of fake and real.

    PyramidPix2Pix uses weights (25, 25, 25, 25) with its form (level 0 is the plain L1 with
    lambda_L1 = 25); ASP's loss with weight ``lambda_gp`` is ``[lambda_gp / 6] * 6`` with
    ``form="asp"``.
    """
    pyr_fake = gaussian_pyramid(fake, len(weights), form)
    pyr_real = gaussian_pyramid(real, len(weights), form)
    return sum(w * F.l1_loss(f, r) for w, f, r in zip(weights, pyr_fake, pyr_real, strict=True))


class PatchSampleMLP(nn.Module):
    """CUT's ``PatchSampleF`` with MLP heads: sample patch features, project, L2-normalise.

    One head (Linear, ReLU, Linear to ``nc``) per feature layer, for layers with ``in_channels``.
    """

    def __init__(self, in_channels: Sequence[int], nc: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)) for c in in_channels
        )
        for m in self.modules():  # CUT's init: N(0, 0.02) weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(
        self,
        features: Sequence[Tensor],
        num_patches: int = 256,
        patch_ids: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Projected samples (B * P x nc per layer) and the patch indices used.

        Pass the indices back as ``patch_ids`` to sample the same locations in other features.
        """
        samples, ids = [], []
        for i, (feat, mlp) in enumerate(zip(features, self.mlps, strict=True)):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)
            if patch_ids is None:
                idx = torch.randperm(flat.shape[1], device=feat.device)[:num_patches]
            else:
                idx = patch_ids[i]
            samples.append(F.normalize(mlp(flat[:, idx, :].flatten(0, 1)), dim=1))
            ids.append(idx)
        return samples, ids


def patch_nce_loss(
    feat_q: Tensor, feat_k: Tensor, batch_size: int, tau: float = 0.07, reduction: str = "mean"
) -> Tensor:
    """CUT's PatchNCE: each query patch must pick the key patch at its own location.

    ``feat_q`` and ``feat_k`` are (B * P) x D unit vectors; negatives are the other P - 1 patches of
    the same image; keys get no gradient. ``reduction`` "mean" or "none" (one loss per patch).
    """
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    positive = (feat_q * feat_k).sum(dim=1, keepdim=True)
    q, k = feat_q.view(batch_size, -1, dim), feat_k.view(batch_size, -1, dim)
    p = q.shape[1]
    same = torch.eye(p, dtype=torch.bool, device=feat_q.device)[None]
    negative = torch.bmm(q, k.transpose(2, 1)).masked_fill(same, -10.0).view(-1, p)
    logits = torch.cat([positive, negative], dim=1) / tau
    target = torch.zeros(n, dtype=torch.long, device=feat_q.device)
    losses = F.cross_entropy(logits, target, reduction="none")
    if reduction == "none":
        return losses
    if reduction == "mean":
        return losses.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def patch_nce(
    sampler: PatchSampleMLP,
    feats_q: Sequence[Tensor],
    feats_k: Sequence[Tensor],
    num_patches: int = 256,
    tau: float = 0.07,
) -> Tensor:
    """PatchNCE averaged over layers, sampling the same locations in queries and keys."""
    pooled_k, ids = sampler(feats_k, num_patches)
    pooled_q, _ = sampler(feats_q, num_patches, ids)
    batch = feats_q[0].shape[0]
    losses = [patch_nce_loss(q, k, batch, tau) for q, k in zip(pooled_q, pooled_k, strict=True)]
    return torch.stack(losses).mean()
