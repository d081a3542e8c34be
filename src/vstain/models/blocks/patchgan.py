"""pix2pix's PatchGAN discriminator (``NLayerDiscriminator``): 70 x 70 patches with 3 layers."""

from __future__ import annotations

from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.resnet_generator import norm_layer


class PatchGANDiscriminator(nn.Module):
    """Conv 4x4 stride 2 stack ending in a one-channel map of real/fake logits (one per patch).

    Conditional GANs pass H&E and IHC concatenated, so ``in_channels`` is 6. The layout
    (``model.N``) matches the public pix2pix code.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
