"""A PatchGAN discriminator conditioned on the diffusion step t.

The body is :class:`PatchGANDiscriminator`; a sinusoidal embedding of t goes through an MLP that
gives a per-channel scale and shift (FiLM) for the input of every LeakyReLU, so the realism score
of each patch depends on how noisy the image is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.patchgan import PatchGANDiscriminator


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """DDPM's sinusoidal embedding of integer steps ``t`` (B) -> B x ``dim`` (``dim`` even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class TimePatchGAN(nn.Module):
    """``D(x, t)``: pix2pix's PatchGAN whose features are modulated by an embedding of ``t``."""

    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        embed_dim: int = 128,
    ):
        super().__init__()
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"t_embed_dim must be an even number >= 2, got {embed_dim}")
        self.body = PatchGANDiscriminator(in_channels, ndf, n_layers, norm)
        self.embed_dim = embed_dim
        self.film_at, self.channels = self._film_points()
        self.film = nn.Sequential(
            nn.Linear(embed_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, 2 * sum(self.channels)),
        )
        init_normal(self.film)

    def _film_points(self) -> tuple[list[int], list[int]]:
        """Indices of the body's LeakyReLUs and the channel count of their inputs."""
        points, channels, width = [], [], None
        for i, layer in enumerate(self.body.model):
            if isinstance(layer, nn.Conv2d):
                width = layer.out_channels
            if isinstance(layer, nn.LeakyReLU):
                points.append(i)
                channels.append(width)
        return points, channels

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Patch logits for images ``x`` (B x C x H x W) at diffusion steps ``t`` (B)."""
        params = self.film(timestep_embedding(t, self.embed_dim))
        scales_shifts = iter(params.split([c for c in self.channels for _ in (0, 1)], dim=1))
        points = set(self.film_at)
        for i, layer in enumerate(self.body.model):
            if i in points:
                scale, shift = next(scales_shifts), next(scales_shifts)
                x = x * (1 + scale[..., None, None]) + shift[..., None, None]
            x = layer(x)
        return x
