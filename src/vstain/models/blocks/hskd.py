"""K-Stain's Hierarchical Spatial Keypoint Detector network (HSKD, Sec. 3.2, Eq. 1-3).

CNN stages at strides 2, 4, ..., ``2**stages``; every stage's features are average-pooled to the
coarsest grid and concatenated (the hierarchy), embedded by a 1 x 1 conv into tokens, refined by
transformer blocks with multi-head self-attention, mapped to one heatmap per keypoint and turned
into (x, y) keypoints in input pixels by the softmax centre of mass.

``prior`` > 0 adds a fixed Gaussian log-prior to each heatmap, centred on that keypoint's anchor
of a regular grid over the image (sigma = ``prior`` x the image side), so that an untrained
detector already spreads its keypoints and the affine fit of Eq. 4 is well conditioned; 0 is the
paper's detector (see docs/models/k_stain.md).
"""

from __future__ import annotations

import math

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


def anchor_grid(n: int) -> Tensor:
    """N anchors (x, y) in [0, 1]: cell centres of a rows x (n / rows) grid, rows the largest
    divisor of n not above sqrt(n)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    cols = n // rows
    y, x = torch.meshgrid(
        (torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij"
    )
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def anchor_log_prior(anchors: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """N x h x w Gaussian log-densities (up to a constant) around ``anchors`` on an h x w map,
    positions and ``sigma`` in fractions of the image side."""
    h, w = size
    x = (torch.arange(w, dtype=anchors.dtype, device=anchors.device) + 0.5) / w
    y = (torch.arange(h, dtype=anchors.dtype, device=anchors.device) + 0.5) / h
    dx = (x[None, :] - anchors[:, 0:1]) ** 2
    dy = (y[None, :] - anchors[:, 1:2]) ** 2
    return -(dy[:, :, None] + dx[:, None, :]) / (2 * sigma**2)


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
        prior: float = 0.0,
    ):
        super().__init__()
        if n_keypoints < 3 or stages < 1 or layers < 1 or dim % heads or prior < 0:
            raise ValueError(
                f"HSKD needs >= 3 keypoints, >= 1 stage and transformer layer, a token dim "
                f"divisible by the heads and a prior >= 0; got {n_keypoints}, {stages}, "
                f"{layers}, {dim}/{heads}, {prior}"
            )
        self.prior = prior
        self.register_buffer("anchors", anchor_grid(n_keypoints), persistent=False)
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
        logits = self.head(self.transformer(tokens)).transpose(1, 2).unflatten(2, size)
        if self.prior:
            logits = logits + anchor_log_prior(self.anchors, size, self.prior).to(logits)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        return centre_of_mass(self.heatmaps(x), self.stride)
