"""The CUT / pix2pix ResNet generator with the public repositories' module layout.

The layers live in one ``nn.Sequential`` called ``model`` and are numbered exactly as in
taesungp/contrastive-unpaired-translation and junyanz/pytorch-CycleGAN-and-pix2pix, so their
``*_net_G.pth`` state dicts load unchanged. With ``antialias`` (CUT's default) each downsampling is
conv (stride 1) + norm + ReLU + blur-pool; without it, a stride-2 conv + norm + ReLU. With
``antialias_up`` each upsampling is blur-upsample + conv + norm + ReLU; without it, a transposed
conv + norm + ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.receptive import halo_for, receptive_field

NORMS = ("instance", "batch", "none")
#: Config keys a model passes to :meth:`ResnetGenerator.from_config`.
GENERATOR_KEYS = (
    "ngf",
    "n_blocks",
    "norm",
    "dropout",
    "antialias",
    "antialias_up",
    "spectral_norm",
)
#: Two stride-2 stages: inputs must be multiples of 4 px, and so are halos.
STRIDE = 4


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The public code's norms: batch (affine, running stats), instance (neither), none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def binomial_filter(size: int) -> Tensor:
    """Normalised 2-D binomial blur filter of ``size`` x ``size`` taps."""
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float32)
    filt = row[:, None] * row[None, :]
    return filt / filt.sum()


class Downsample(nn.Module):
    """CUT's anti-aliased downsampling: reflect pad, 3x3 binomial blur, stride 2 (per channel)."""

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2):
        super().__init__()
        self.stride = stride
        lo, hi = (filt_size - 1) // 2, math.ceil((filt_size - 1) / 2)
        self.pad = nn.ReflectionPad2d((lo, hi, lo, hi))
        self.register_buffer(
            "filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        return radius + math.ceil((self.filt.shape[-1] - 1) / 2) * jump, jump * self.stride


class Upsample(nn.Module):
    """CUT's anti-aliased upsampling: replicate pad, 4x4 binomial transposed blur, stride 2."""

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.pad = nn.ReplicationPad2d(1)
        filt = binomial_filter(filt_size) * stride**2
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = self.filt.shape[-1]
        out = F.conv_transpose2d(
            self.pad(x),
            self.filt,
            stride=self.stride,
            padding=1 + (size - 1) // 2,
            groups=x.shape[1],
        )[:, :, 1:, 1:]
        return out if size % 2 else out[:, :, :-1, :-1]

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        jump = jump / self.stride
        # the blur reaches ceil((size-1)/2) output px; the one-pixel crop shifts it by one more
        return radius + (math.ceil((self.filt.shape[-1] - 1) / 2) + 1) * jump, jump


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convs with a skip connection (``conv_block.N`` as in the repos)."""

    def __init__(self, dim: int, norm: str, dropout: bool, bias: bool):
        super().__init__()
        layers = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            norm_layer(norm, dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        return receptive_field(self.conv_block, radius, jump)


class ResnetGenerator(nn.Module):
    """7x7 conv, two downsamplings, ``n_blocks`` ResNet blocks, two upsamplings, 7x7 conv + tanh.

    Output is in [-1, 1]. Convs carry a bias only with instance norm, as in the public code.
    ``spectral_norm`` wraps every conv in ``torch.nn.utils.spectral_norm``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        antialias: bool = True,
        antialias_up: bool = True,
        spectral_norm: bool = False,
    ):
        super().__init__()
        bias = norm == "instance"
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            c = ngf * 2**i
            if antialias:
                layers += [
                    nn.Conv2d(c, 2 * c, 3, padding=1, bias=bias),
                    norm_layer(norm, 2 * c),
                    nn.ReLU(True),
                    Downsample(2 * c),
                ]
            else:
                layers += [
                    nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                    norm_layer(norm, 2 * c),
                    nn.ReLU(True),
                ]
        layers += [ResnetBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            if antialias_up:
                layers += [
                    Upsample(c),
                    nn.Conv2d(c, c // 2, 3, padding=1, bias=bias),
                    norm_layer(norm, c // 2),
                    nn.ReLU(True),
                ]
            else:
                layers += [
                    nn.ConvTranspose2d(
                        c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                    ),
                    norm_layer(norm, c // 2),
                    nn.ReLU(True),
                ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        init_normal(self)
        if spectral_norm:
            for m in self.modules():
                if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                    nn.utils.spectral_norm(m)

    @classmethod
    def from_config(cls, config: dict) -> ResnetGenerator:
        """An RGB -> RGB generator from the :data:`GENERATOR_KEYS` of a model config."""
        return cls(3, 3, **{k: config[k] for k in GENERATOR_KEYS})

    def forward(self, x: Tensor, layers: Sequence[int] | None = None, encode_only: bool = False):
        """The output; with ``layers``, also the outputs of those ``model`` indices (CUT's API).

        Returns the output, ``(output, features)``, or with ``encode_only`` the features alone
        (computing no further than the last layer asked for).
        """
        if not layers:
            return self.model(x)
        wanted = self._check_layers(layers)
        features = []
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in wanted:
                features.append(x)
            if encode_only and i == max(wanted):
                return features
        return x, features

    def encode(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """Features at ``model`` indices ``layers`` (ascending order)."""
        return self.forward(x, layers, encode_only=True)

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channel counts of the features :meth:`encode` returns for ``layers``."""
        wanted = self._check_layers(layers)
        channels, counts = self.in_channels, []
        for i, layer in enumerate(self.model):
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                channels = layer.out_channels
            if i in wanted:
                counts.append(channels)
        return counts

    def _check_layers(self, layers: Sequence[int]) -> set[int]:
        wanted = set(layers)
        if not wanted <= set(range(len(self.model))):
            raise ValueError(f"layer ids must be in 0..{len(self.model) - 1}, got {sorted(layers)}")
        return wanted

    def halo(self) -> int:
        """Receptive-field radius in px, rounded up to a multiple of the total stride (4)."""
        return halo_for(self.model, STRIDE)
