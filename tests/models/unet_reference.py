"""An independent rebuild of the public U-Net layouts, to produce their state-dict keys and outputs.

It follows ``UnetGenerator`` / ``UnetSkipConnectionBlock`` of junyanz/pytorch-CycleGAN-and-pix2pix
and ``Attention_UnetGenerator`` / ``Attention_UnetSkipConnectionBlock`` of the BCI repository's
PyramidPix2pix module by module, with the public quirks kept: the plain blocks' LeakyReLU is in
place (so the skip copy is activated too, which an attention gate then reads), and an attention
block's ``gating`` reuses its ``model``'s first four modules (so its state dict repeats them, and
the inner net runs twice).
"""

import torch
import torch.nn.functional as F
from torch import nn

from tests.models.cut_reference import _norm


class RefSkipBlock(nn.Module):
    def __init__(
        self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
        innermost=False, norm="batch", use_dropout=False, attention=False,
    ):  # fmt: skip
        super().__init__()
        self.outermost, self.innermost, self.attention = outermost, innermost, attention
        use_bias = norm == "instance"
        input_nc = input_nc or outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, not attention)
        downnorm = _norm(norm, inner_nc)
        uprelu = nn.ReLU(not attention)
        upnorm = _norm(norm, outer_nc)
        if attention:
            self.W = nn.Sequential(nn.Conv2d(outer_nc, outer_nc, 1), nn.BatchNorm2d(outer_nc))
            self.theta = nn.Conv2d(outer_nc, outer_nc, 2, stride=2, padding=0, bias=False)
            self.phi = nn.Conv2d(inner_nc * 2, outer_nc, 1, bias=True)
            self.psi = nn.Conv2d(outer_nc, 1, 1, bias=True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=use_bias)
            down = [downrelu, downconv, downnorm]
            model = [*down, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
            if attention:
                self.gating = nn.Sequential(*down, submodule)
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        if not self.attention or self.innermost:
            return torch.cat([x, self.model(x)], 1)
        theta_x = self.theta(x)
        g = self.gating(x)
        phi_g = F.interpolate(self.phi(g), size=theta_x.shape[2:], mode="bilinear")
        f = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        f = F.interpolate(f, size=x.shape[2:], mode="bilinear")
        return torch.cat([self.W(f.expand_as(x) * x), self.model(x)], 1)


class RefUnetGenerator(nn.Module):
    """``attention=True`` is BCI's Attention_UnetGenerator (num_downs 5: attention_unet_32)."""

    def __init__(self, ngf=4, num_downs=8, norm="batch", use_dropout=False, attention=False):
        super().__init__()
        block = RefSkipBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = RefSkipBlock(
                ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout,
                attention=attention,
            )  # fmt: skip
        for mult in (4, 2, 1):
            block = RefSkipBlock(
                ngf * mult, ngf * mult * 2, submodule=block, norm=norm, attention=attention
            )
        self.model = RefSkipBlock(3, ngf, input_nc=3, submodule=block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)
