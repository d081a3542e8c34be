"""An independent rebuild of the public ResnetGenerator layout, to produce its state-dict keys.

It follows models/networks.py of taesungp/contrastive-unpaired-translation (and the pix2pix repo,
which is its ``no_antialias`` case) module by module, so a state dict of it is keyed exactly like a
public ``latest_net_G.pth``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _filter(size: int) -> torch.Tensor:
    a = {3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0]}[size]
    a = np.array(a)
    f = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
    return f / f.sum()


class RefDownsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", _filter(3)[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d([1, 1, 1, 1])

    def forward(self, x):
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class RefUpsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", (_filter(4) * 4)[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReplicationPad2d([1, 1, 1, 1])

    def forward(self, x):
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:, 1:][:, :, :-1, :-1]


def _norm(kind, c):
    if kind == "batch":
        return nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if kind == "instance":
        return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    return nn.Identity()


class RefResnetBlock(nn.Module):
    def __init__(self, dim, norm, dropout, bias):
        super().__init__()
        block = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, padding=0, bias=bias),
            _norm(norm, dim),
            nn.ReLU(True),
        ]
        if dropout:
            block += [nn.Dropout(0.5)]
        block += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, padding=0, bias=bias),
            _norm(norm, dim),
        ]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnetGenerator(nn.Module):
    def __init__(
        self,
        ngf=8,
        n_blocks=9,
        norm="instance",
        dropout=False,
        no_antialias=False,
        no_antialias_up=False,
    ):
        super().__init__()
        bias = norm == "instance"
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, 7, padding=0, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            if no_antialias:
                model += [
                    nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                    _norm(norm, ngf * mult * 2),
                    nn.ReLU(True),
                ]
            else:
                model += [
                    nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=1, padding=1, bias=bias),
                    _norm(norm, ngf * mult * 2),
                    nn.ReLU(True),
                    RefDownsample(ngf * mult * 2),
                ]
        for _ in range(n_blocks):
            model += [RefResnetBlock(ngf * 4, norm, dropout, bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            if no_antialias_up:
                model += [
                    nn.ConvTranspose2d(
                        ngf * mult,
                        ngf * mult // 2,
                        3,
                        stride=2,
                        padding=1,
                        output_padding=1,
                        bias=bias,
                    ),
                    _norm(norm, ngf * mult // 2),
                    nn.ReLU(True),
                ]
            else:
                model += [
                    RefUpsample(ngf * mult),
                    nn.Conv2d(ngf * mult, ngf * mult // 2, 3, stride=1, padding=1, bias=bias),
                    _norm(norm, ngf * mult // 2),
                    nn.ReLU(True),
                ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def randomise(module: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """Random N(0, scale) weights and batch-norm statistics: equal outputs mean equal weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not name.endswith("filt"):
                noise = torch.randn(tensor.shape, generator=gen) * scale
                tensor.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)
    return module
