"""K-Stain's Keypoint-aware Enhancement Generator (KEG, Sec. 3.3, Eq. 9-11).

The pix2pix ResNet generator's layers, split after the downsampling path: the structural tensor H
of the keypoints (on the 4-px grid of the downsampled features) is concatenated with them, a 1 x 1
conv with norm and ReLU projects the concatenation back to the ResBlocks' width, then come the
ResBlocks and the upsampling path. Without a keypoint embedding it is the plain ResNet generator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vstain.models.blocks.init import init_normal
from vstain.models.blocks.keypoints import KeypointEmbedding
from vstain.models.blocks.receptive import receptive_field
from vstain.models.blocks.resnet_generator import (
    STRIDE,
    ResnetBlock,
    ResnetGenerator,
    norm_layer,
)


class KeypointGenerator(nn.Module):
    """H&E B x 3 x H x W (+ keypoints B x N x 2 in its pixels) -> IHC in [-1, 1]."""

    def __init__(
        self,
        ngf: int,
        n_blocks: int,
        norm: str,
        dropout: bool,
        embedding: KeypointEmbedding | None,
    ):
        super().__init__()
        layers = ResnetGenerator(
            3, 3, ngf, n_blocks, norm, dropout, antialias=False, antialias_up=False
        ).model
        first_block = next(i for i, m in enumerate(layers) if isinstance(m, ResnetBlock))
        self.down, self.up = layers[:first_block], layers[first_block:]
        self.embedding = embedding
        self.fuse = nn.Identity()
        if embedding is not None:
            width = 4 * ngf
            self.fuse = nn.Sequential(
                nn.Conv2d(width + embedding.out_channels, width, 1, bias=norm == "instance"),
                norm_layer(norm, width),
                nn.ReLU(True),
            )
            init_normal(self.fuse)

    def forward(self, x: Tensor, points: Tensor) -> Tensor:
        features = self.down(x)
        if self.embedding is not None:
            structure = self.embedding(points, features.shape[-2:], STRIDE)
            features = self.fuse(torch.cat([features, structure], dim=1))
        return self.up(features)

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        """Reach in image pixels for fixed keypoints (H depends on the keypoints only)."""
        for part in (self.down, self.fuse, self.up):
            radius, jump = receptive_field(part, radius, jump)
        return radius, jump
