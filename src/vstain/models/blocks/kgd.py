"""K-Stain's Keypoint Guided Discriminator (KGD, Sec. 3.4, Eq. 12).

pix2pix's PatchGAN on the IHC, with the structural tensor H of the image's keypoints concatenated
to the image features entering every conv after the first, each time rendered on those features'
own grid: H is fused at every feature scale of the backbone (strides 2, 4, 8, 8 for three layers).
With ``zero_h`` the same network receives zeros in place of H (a control: the architecture
without the keypoints); the KSE is still built, so a seed draws the same initial weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.keypoints import KeypointEmbedding
from vstain.models.blocks.resnet_generator import norm_layer


class KeypointDiscriminator(nn.Module):
    """IHC B x 3 x H x W + keypoints B x N x 2 -> patch logits."""

    def __init__(
        self, ndf: int, n_layers: int, norm: str, embedding: KeypointEmbedding, zero_h: bool = False
    ):
        super().__init__()
        extra, bias = embedding.out_channels, norm == "instance"
        self.first = nn.Sequential(nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True))
        blocks = []
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(
                        ndf * prev + extra, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=bias
                    ),
                    norm_layer(norm, ndf * mult),
                    nn.LeakyReLU(0.2, True),
                )
            )
        blocks.append(nn.Conv2d(ndf * mult + extra, 1, 4, 1, 1))
        self.blocks = nn.ModuleList(blocks)
        init_normal(self.first)
        init_normal(self.blocks)
        self.embedding, self.zero_h = embedding, zero_h

    def structure(self, points: Tensor, x: Tensor, width: int) -> Tensor:
        """H on the grid of features ``x`` (zeros with ``zero_h``)."""
        if self.zero_h:
            return x.new_zeros(x.shape[0], self.embedding.out_channels, *x.shape[-2:])
        return self.embedding(points, x.shape[-2:], width / x.shape[-1])

    def forward(self, x: Tensor, points: Tensor) -> Tensor:
        width = x.shape[-1]
        x = self.first(x)
        for block in self.blocks:
            x = block(torch.cat([x, self.structure(points, x, width)], dim=1))
        return x
