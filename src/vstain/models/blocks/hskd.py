"""K-Stain's Hierarchical Spatial Keypoint Detector network (HSKD, Sec. 3.2, Eq. 1-3).

CNN stages at strides 2, 4, ..., ``2**stages``; every stage's features are average-pooled to the
coarsest grid and concatenated (the hierarchy), embedded by a 1 x 1 conv into tokens, refined by
transformer blocks with multi-head self-attention, mapped to one heatmap per keypoint and turned
into (x, y) keypoints in input pixels by the softmax centre of mass.

Not in the paper, each off by default (the paper's detector), see docs/models/k_stain.md:

- ``prior`` > 0 adds a fixed Gaussian log-prior to each heatmap, centred on that keypoint's anchor
  of a regular grid over the image (sigma = ``prior`` x the image side), so that an untrained
  detector already spreads its keypoints and the affine fit of Eq. 4 is well conditioned.
- ``window`` restricts each keypoint's softmax to its anchor's cell of that grid, so a keypoint is
  the soft peak of its own region of the tile.
- ``fine`` adds logits from the first (stride 2) stage to the transformer's, upsampled, so
  keypoints are placed on a stride-2 grid instead of the coarsest one.
- ``gain`` multiplies the content logits, so that heatmaps sharp enough to follow single nuclei
  are reached in hundreds of steps rather than thousands.
- ``hematoxylin`` feeds the detector the hematoxylin concentration of colour deconvolution instead
  of RGB: the nuclei are the structure adjacent H&E and IHC sections share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vstain.color.optics import HED, I0, MIN_INTENSITY
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


def hematoxylin(x: Tensor) -> Tensor:
    """Images in [-1, 1] (B x 3 x H x W) -> hematoxylin concentration (B x 1 x H x W, OD units),
    by colour deconvolution with scikit-image's H-E-DAB vectors (``vstain.color.optics.HED``);
    the torch counterpart of ``vstain.color.optics.rgb_to_concentrations``, on the model device."""
    od = -torch.log10(((x.float() + 1) / 2).clamp(min=MIN_INTENSITY / I0))
    inverse = torch.as_tensor(HED.inverse[:, :1], dtype=od.dtype, device=od.device)
    return torch.einsum("bchw,cd->bdhw", od, inverse).to(x.dtype)


def window_log_prior(n: int, size: tuple[int, int], like: Tensor) -> Tensor:
    """N x h x w: 0 on the cells of ``anchor_grid(n)``'s grid that hold each keypoint's anchor,
    -1e4 elsewhere (a softmax then spreads over the keypoint's own cell only)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    cols = n // rows
    h, w = size
    if h < rows or w < cols:
        raise ValueError(f"a {h} x {w} keypoint map is smaller than the {rows} x {cols} windows")
    row = torch.arange(h, device=like.device) * rows // h
    col = torch.arange(w, device=like.device) * cols // w
    cell = (row[:, None] * cols + col[None, :]).flatten()
    inside = cell[None, :] == torch.arange(n, device=like.device)[:, None]
    prior = torch.zeros(n, h * w, dtype=like.dtype, device=like.device).masked_fill(~inside, -1e4)
    return prior.view(n, h, w)


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

    H and W must be multiples of ``size_multiple`` (``2**stages``); keypoints are placed on a grid
    of ``stride`` px.
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
        window: bool = False,
        fine: bool = False,
        hematoxylin: bool = False,
        gain: float = 1.0,
    ):
        super().__init__()
        if n_keypoints < 3 or stages < 1 or layers < 1 or dim % heads or prior < 0 or gain <= 0:
            raise ValueError(
                f"HSKD needs >= 3 keypoints, >= 1 stage and transformer layer, a token dim "
                f"divisible by the heads, a prior >= 0 and a gain > 0; got {n_keypoints}, "
                f"{stages}, {layers}, {dim}/{heads}, {prior}, {gain}"
            )
        self.prior, self.window, self.hematoxylin, self.gain = prior, window, hematoxylin, gain
        self.register_buffer("anchors", anchor_grid(n_keypoints), persistent=False)
        widths = [channels * 2**k for k in range(stages)]
        c_in = 1 if hematoxylin else 3
        self.stages = nn.ModuleList(
            _stage(a, b, norm) for a, b in zip([c_in, *widths], widths, strict=False)
        )
        self.size_multiple = 2**stages
        self.stride = 2 if fine else self.size_multiple
        self.fine = nn.Conv2d(widths[0], n_keypoints, 1) if fine else None
        self.embed = nn.Conv2d(sum(widths), dim, 1)
        block = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_keypoints))

    def heatmaps(self, x: Tensor) -> Tensor:
        """Keypoint logits B x N x (H / stride) x (W / stride)."""
        if self.hematoxylin:
            x = hematoxylin(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        size = features[-1].shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, size) for f in features], dim=1)
        tokens = self.embed(pooled).flatten(2).transpose(1, 2)
        logits = self.head(self.transformer(tokens)).transpose(1, 2).unflatten(2, size)
        if self.fine is not None:
            fine = self.fine(features[0])
            logits = F.interpolate(logits, size=fine.shape[-2:], mode="bilinear") + fine
        logits = logits * self.gain
        size = logits.shape[-2:]
        if self.prior:
            logits = logits + anchor_log_prior(self.anchors, size, self.prior).to(logits)
        if self.window:
            logits = logits + window_log_prior(len(self.anchors), size, logits)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        return centre_of_mass(self.heatmaps(x), self.stride)
