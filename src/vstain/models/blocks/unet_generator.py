"""The pix2pix U-Net generator and PyramidPix2Pix's attention U-Net, with the public module layout.

Blocks nest as in junyanz/pytorch-CycleGAN-and-pix2pix (``UnetSkipConnectionBlock``): each holds an
``nn.Sequential`` called ``model`` (down: LeakyReLU, 4x4 stride-2 conv, norm; the inner block; up:
ReLU, 4x4 stride-2 transposed conv, norm), so ``model.model.1.model.3...`` keys load unchanged.
The public blocks' in-place LeakyReLU rewrites a block's input before it is concatenated, so their
skip carries ``LeakyReLU(x)``; here that is explicit. (A parent's ReLU hides it, but an attention
gate reads the concatenation directly.)

With ``attention`` the middle blocks are the BCI repository's ``Attention_UnetSkipConnectionBlock``:
an attention gate (``theta`` on the skip, ``phi`` on the inner output, ``psi``, sigmoid, bilinear
upsampling) scales the skip, which then passes a 1x1 conv + batch norm (``W``). The public block
runs its inner network twice (``gating`` shares the modules of ``model``'s first four layers);
here it runs once, which gives the same eval-mode outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.receptive import input_span
from vstain.models.blocks.resnet_generator import norm_layer

#: Config keys a model passes to :meth:`UnetGenerator.from_config`.
UNET_KEYS = ("ngf", "num_downs", "norm", "dropout", "attention")
#: The innermost level and the four widening ones (ngf x 8, 8, 4, 2, 1); deeper U-Nets add
#: middle levels of ngf x 8 channels.
MIN_DOWNS = 5


class UnetBlock(nn.Module):
    """One level: ``kind`` is "outermost", "innermost" or "middle" (optionally with attention)."""

    def __init__(
        self,
        outer: int,
        inner: int,
        *,
        kind: str = "middle",
        sub: nn.Module | None = None,
        in_channels: int | None = None,
        norm: str = "batch",
        dropout: bool = False,
        attention: bool = False,
    ):
        super().__init__()
        bias = norm == "instance"
        self.kind, self.attention = kind, attention
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        if kind == "outermost":
            up = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1)
            layers = [down, sub, nn.ReLU(), up, nn.Tanh()]
        elif kind == "innermost":
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, norm_layer(norm, outer)]
        else:
            up = nn.ConvTranspose2d(2 * inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, norm_layer(norm, inner), sub]
            layers += [nn.ReLU(), up, norm_layer(norm, outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)
        if attention:
            self.W = nn.Sequential(nn.Conv2d(outer, outer, 1), nn.BatchNorm2d(outer))
            self.theta = nn.Conv2d(outer, outer, 2, stride=2, bias=False)
            self.phi = nn.Conv2d(2 * inner, outer, 1)
            self.psi = nn.Conv2d(outer, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "outermost":
            return self.model(x)
        if not self.attention:
            skip = self.model[0](x)
            return torch.cat([skip, self.model[1:](skip)], 1)
        gate = self.model[:4](x)
        theta = self.theta(x)
        phi = F.interpolate(self.phi(gate), size=theta.shape[-2:], mode="bilinear")
        weight = torch.sigmoid(self.psi(F.relu(theta + phi)))
        weight = F.interpolate(weight, size=x.shape[-2:], mode="bilinear")
        return torch.cat([self.W(weight * x), self.model[4:](gate)], 1)

    def input_span(self, lo: int, hi: int) -> tuple[int, int]:
        """Input indices output indices ``lo..hi`` depend on (see :func:`input_span`)."""
        first, last = input_span(self.model, lo, hi)
        if self.kind != "outermost":  # the skip
            first, last = min(first, lo), max(last, hi)
        if self.attention:  # bilinear x2: out o reads coarse floor(o / 2 - 1/4) and the next
            coarse_lo, coarse_hi = (lo - 1) // 2, (hi - 1) // 2 + 1
            gate = input_span(self.model[:4], coarse_lo, coarse_hi)
            theta = input_span(self.theta, coarse_lo, coarse_hi)
            first, last = min(first, gate[0], theta[0]), max(last, gate[1], theta[1])
        return first, last


class UnetGenerator(nn.Module):
    """``num_downs`` stride-2 levels (``unet_256``: 8, ``unet_128``: 7, ``attention_unet_32``: 5).

    Inputs must be multiples of ``2 ** num_downs`` px; output in [-1, 1]. Convs carry a bias only
    with instance norm, as in the public code; dropout sits in the ``num_downs - 5`` deepest middle
    blocks only.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: bool = False,
        attention: bool = False,
    ):
        super().__init__()
        if num_downs < MIN_DOWNS:
            raise ValueError(f"num_downs must be >= {MIN_DOWNS}, got {num_downs}")
        opts = {"norm": norm, "attention": attention}
        block = UnetBlock(ngf * 8, ngf * 8, kind="innermost", norm=norm)
        for _ in range(num_downs - MIN_DOWNS):
            block = UnetBlock(ngf * 8, ngf * 8, sub=block, dropout=dropout, **opts)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, sub=block, **opts)
        self.model = UnetBlock(
            out_channels, ngf, kind="outermost", sub=block, in_channels=in_channels, norm=norm
        )
        self.size_multiple = 2**num_downs
        init_normal(self)

    @classmethod
    def from_config(cls, config: dict) -> UnetGenerator:
        """An RGB -> RGB generator from the :data:`UNET_KEYS` of a model config."""
        return cls(3, 3, **{k: config[k] for k in UNET_KEYS})

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def receptive_radius(self) -> int:
        """The farthest input pixel (px) any output pixel depends on, over all stride phases."""
        spans = [(o, *input_span(self.model, o, o)) for o in range(self.size_multiple)]
        return max(max(o - lo, hi - o) for o, lo, hi in spans)

    def halo(self) -> int:
        """:meth:`receptive_radius` rounded up to a multiple of the input size multiple."""
        return math.ceil(self.receptive_radius() / self.size_multiple) * self.size_multiple
