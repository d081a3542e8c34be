"""StainDiffuser's networks: the H&E encoder (F1..F4), task attention gates and denoising UNets.

Every layer is a convolution or a per-pixel operation at inference: no GroupNorm (it would couple
every pixel of a tile; residual branches start at zero instead, as ADM's zero_module), only
per-pixel channel norms or batch norm (running statistics at inference), so an output pixel depends
on a bounded neighbourhood and tiles of one network evaluation stitch exactly; :func:`unet_radius`
gives that neighbourhood's radius.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vstain.models.blocks.receptive import receptive_field
from vstain.models.blocks.resnet_generator import norm_layer
from vstain.models.blocks.time_patchgan import timestep_embedding

LEVELS = 4


def zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` with zero weights and bias (ADM's zero_module: residual blocks start as skips)."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ChannelNorm(nn.Module):
    """Each pixel's feature vector to zero mean and unit variance, then a learnt scale and shift:
    GroupNorm's role (one group) without statistics across pixels, so tiles stay exact."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


#: "batch" only suits networks whose batch shares one input distribution (the H&E encoder): in
#: the denoisers a batch mixes noise levels.
NORMS = ("channel", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    return ChannelNorm(channels) if kind == "channel" else norm_layer(kind, channels)


class ResBlock(nn.Module):
    """ADM's block with per-pixel norms: norm-SiLU-conv3x3, norm, time-embedding scale and
    shift, SiLU-conv3x3 (zero-initialised), + 1x1 skip."""

    def __init__(self, cin: int, cout: int, temb_dim: int = 0, norm: str = "channel"):
        super().__init__()
        self.norm1, self.norm2 = _norm(norm, cin), _norm(norm, cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.temb = nn.Linear(temb_dim, 2 * cout) if temb_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.temb is not None:
            scale, shift = self.temb(F.silu(temb))[..., None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.conv2(F.silu(h)) + self.skip(x)

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        return radius + 2 * jump, jump


class Level(nn.Module):
    """One encoder scale: optional stride-2 conv (scales 2-4), then ``blocks`` ResBlocks."""

    def __init__(
        self, cin: int, cout: int, blocks: int, down: bool, temb_dim: int = 0, norm: str = "channel"
    ):
        super().__init__()
        self.down = nn.Conv2d(cin, cin, 3, stride=2, padding=1) if down else nn.Identity()
        widths = [cin] + [cout] * blocks
        self.blocks = nn.ModuleList(
            ResBlock(a, b, temb_dim, norm) for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        x = self.down(x)
        for block in self.blocks:
            x = block(x, temb)
        return x

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        radius, jump = receptive_field(self.down, radius, jump)
        for block in self.blocks:
            radius, jump = block.receptive_field(radius, jump)
        return radius, jump


class Encoder(nn.Module):
    """conv3x3 stem and four :class:`Level` s; features at strides 1, 2, 4, 8."""

    def __init__(
        self, cin: int, channels: list[int], blocks: int, temb_dim: int = 0, norm: str = "channel"
    ):
        super().__init__()
        if len(channels) != LEVELS or min(channels) < 1:
            raise ValueError(f"channels must be {LEVELS} positive widths, got {channels}")
        if blocks < 1:
            raise ValueError(f"res_blocks must be >= 1, got {blocks}")
        self.stem = nn.Conv2d(cin, channels[0], 3, padding=1)
        widths = [channels[0], *channels]
        self.levels = nn.ModuleList(
            Level(widths[i], widths[i + 1], blocks, i > 0, temb_dim, norm) for i in range(LEVELS)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """The H&E features F1..F4."""
        x = self.stem(x)
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class AttentionGate(nn.Module):
    """Task-specific attention from H&E features ``g`` modulating UNet encoder features ``f``.

    ``A = sigmoid(conv1x1(SiLU(conv3x3(g))))`` (one weight per pixel and channel);
    output ``A * f + (1 - A) * conv1x1(g)``: where attention is low the H&E content takes over.
    """

    def __init__(self, he_channels: int, channels: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(he_channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
        )
        self.value = nn.Conv2d(he_channels, channels, 1)

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        a = torch.sigmoid(self.attention(g))
        return a * f + (1 - a) * self.value(g)


class Up(nn.Module):
    """Nearest 2x upsampling and a conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        jump = jump / 2
        return radius + 2 * jump, jump  # one fine pixel for the nearest copy, one for the conv


class DenoisingUNet(nn.Module):
    """``eps(x_t, t, F1..F4)``: encoder whose scale-i features pass attention gate i, a middle
    ResBlock, a decoder with skips, and a timestep (and optional direction) embedding.
    """

    def __init__(
        self,
        cio: int,
        channels: list[int],
        blocks: int,
        he_channels: list[int],
        directions: int = 0,
        norm: str = "channel",
    ):
        super().__init__()
        c0, temb = channels[0], 4 * channels[0]
        self.c0 = c0
        self.time = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.direction = nn.Embedding(directions, temb) if directions else None
        self.encoder = Encoder(cio, channels, blocks, temb, norm)
        self.gates = nn.ModuleList(
            AttentionGate(g, c) for g, c in zip(he_channels, channels, strict=True)
        )
        self.middle = ResBlock(channels[-1], channels[-1], temb, norm)
        self.decoder = nn.ModuleList(
            nn.ModuleList(ResBlock(2 * c if j == 0 else c, c, temb, norm) for j in range(blocks))
            for c in channels
        )
        self.ups = nn.ModuleList(Up(channels[i]) for i in range(1, LEVELS))
        self.to_next = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i - 1], 1) for i in range(1, LEVELS)
        )
        self.out_norm = _norm(norm, c0)
        self.out = zero_init(nn.Conv2d(c0, cio, 3, padding=1))

    def embed(self, t: Tensor, direction: Tensor | None) -> Tensor:
        emb = self.time(timestep_embedding(t, self.c0))
        if self.direction is not None:
            emb = emb + self.direction(direction)
        return emb

    def forward(
        self, x: Tensor, t: Tensor, he_feats: list[Tensor], direction: Tensor | None = None
    ) -> Tensor:
        temb = self.embed(t, direction)
        h = self.encoder.stem(x)
        skips = []
        for level, gate, g in zip(self.encoder.levels, self.gates, he_feats, strict=True):
            h = gate(level(h, temb), g)
            skips.append(h)
        h = self.middle(h, temb)
        for i in reversed(range(LEVELS)):
            h = torch.cat([h, skips[i]], 1)
            for block in self.decoder[i]:
                h = block(h, temb)
            if i:
                h = self.to_next[i - 1](self.ups[i - 1](h))
        return self.out(F.silu(self.out_norm(h)))


def unet_radius(he_encoder: Encoder, unet: DenoisingUNet) -> float:
    """Farthest input pixel (of the H&E or of x_t) that one evaluation of ``unet`` can see."""
    r_he, _ = receptive_field(he_encoder.stem)
    r_x, jump = receptive_field(unet.encoder.stem)
    radii = []
    for i in range(LEVELS):
        r_he, _ = he_encoder.levels[i].receptive_field(r_he, jump)
        r_x, jump = unet.encoder.levels[i].receptive_field(r_x, jump)
        r_x = max(r_x, r_he + jump)  # the gate's conv3x3 on the H&E features
        radii.append((r_x, jump))
    r, jump = unet.middle.receptive_field(r_x, jump)
    for i in reversed(range(LEVELS)):
        r = max(r, radii[i][0])
        for block in unet.decoder[i]:
            r, jump = block.receptive_field(r, jump)
        if i:
            r, jump = unet.ups[i - 1].receptive_field(r, jump)
    return receptive_field(unet.out, r, jump)[0]
