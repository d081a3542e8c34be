"""K-Stain's Hierarchical Spatial Keypoint Detector network (HSKD, Sec. 3.2, Eq. 1-3).

CNN stages at strides 2, 4, ..., ``2**stages``; every stage's features are average-pooled to the
coarsest grid and concatenated (the hierarchy), embedded by a 1 x 1 conv into tokens, refined by
transformer blocks with multi-head self-attention, mapped to one heatmap per keypoint and turned
into (x, y) keypoints in input pixels by the softmax centre of mass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vstain.models.blocks.keypoints import centre_of_mass
from vstain.models.blocks.resnet_generator import norm_layer


def _stage(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """Stride-2 3x3 conv then a 3x3 conv, each with norm and ReLU."""
    bias = norm != "batch"
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias),
        norm_layer(norm, c_out),
        nn.ReLU(True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias),
        norm_layer(norm, c_out),
        nn.ReLU(True),
    )


class KeypointDetector(nn.Module):
    """Images B x 3 x H x W -> keypoints B x ``n_keypoints`` x 2 (x, y in input pixels).

    H and W must be multiples of ``stride`` (``2**stages``).
    """

    def __init__(
        self,
        n_keypoints: int,
        channels: int,
        stages: int,
        dim: int,
        heads: int,
        layers: int,
        norm: str,
    ):
        super().__init__()
        if n_keypoints < 3 or stages < 1 or layers < 1 or dim % heads:
            raise ValueError(
                f"HSKD needs >= 3 keypoints, >= 1 stage and transformer layer and a token dim "
                f"divisible by the heads; got {n_keypoints}, {stages}, {layers}, {dim}/{heads}"
            )
        widths = [channels * 2**k for k in range(stages)]
        self.stages = nn.ModuleList(
            _stage(c_in, c_out, norm) for c_in, c_out in zip([3, *widths], widths, strict=False)
        )
        self.stride = 2**stages
        self.embed = nn.Conv2d(sum(widths), dim, 1)
        block = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_keypoints))

    def heatmaps(self, x: Tensor) -> Tensor:
        """Keypoint logits B x N x (H / stride) x (W / stride)."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        size = features[-1].shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, size) for f in features], dim=1)
        tokens = self.embed(pooled).flatten(2).transpose(1, 2)
        logits = self.head(self.transformer(tokens))
        return logits.transpose(1, 2).unflatten(2, size)

    def forward(self, x: Tensor) -> Tensor:
        return centre_of_mass(self.heatmaps(x), self.stride)
