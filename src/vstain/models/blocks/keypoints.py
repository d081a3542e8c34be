"""Keypoints as coordinates and as images: centre of mass of heatmaps, Gaussian embeddings (KSE).

Keypoints are (x, y) = (column, row) in input pixels, pixel centres at integers. A map with
stride ``s`` (one cell per ``s`` x ``s`` input pixels) has its cell ``j`` centred at input pixel
``(j + 0.5) s - 0.5``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cell_centres(cells: int, stride: float, like: Tensor) -> Tensor:
    """Input-pixel positions of the centres of ``cells`` cells of a map with ``stride``."""
    return (torch.arange(cells, dtype=like.dtype, device=like.device) + 0.5) * stride - 0.5


def centre_of_mass(logits: Tensor, stride: float) -> Tensor:
    """Keypoints (B x N x 2) as the softmax-weighted mean position of logits B x N x h x w.

    Computed in float32 at least, so that positions keep sub-pixel precision under autocast.
    """
    b, n, h, w = logits.shape
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    weights = logits.flatten(2).softmax(dim=2).view(b, n, h, w)
    x = (weights.sum(dim=2) * cell_centres(w, stride, logits)).sum(dim=2)
    y = (weights.sum(dim=3) * cell_centres(h, stride, logits)).sum(dim=2)
    return torch.stack([x, y], dim=2)


def gaussian_heatmaps(points: Tensor, size: tuple[int, int], stride: float, sigma: float) -> Tensor:
    """One Gaussian per keypoint, B x N x h x w on a map of ``size`` = (h, w) with ``stride``.

    ``sigma`` is in input pixels; the peak is 1 at the keypoint.
    """
    h, w = size
    dx = cell_centres(w, stride, points)[None, None, :] - points[..., 0:1]
    dy = cell_centres(h, stride, points)[None, None, :] - points[..., 1:2]
    gx = torch.exp(-(dx**2) / (2 * sigma**2))
    gy = torch.exp(-(dy**2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


class KeypointEmbedding(nn.Module):
    """K-Stain's KSE: a Gaussian heatmap per keypoint, each through its own 1 x 1 conv (Eq. 7-8).

    The ``n_keypoints`` embeddings of ``channels`` channels each are concatenated into the
    structural tensor H (``n_keypoints * channels`` channels). ``sigma`` is in input pixels.
    """

    def __init__(self, n_keypoints: int, channels: int, sigma: float):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"the keypoint sigma must be positive, got {sigma}")
        self.sigma = sigma
        self.conv = nn.Conv2d(n_keypoints, n_keypoints * channels, 1, groups=n_keypoints)
        self.out_channels = n_keypoints * channels

    def forward(self, points: Tensor, size: tuple[int, int], stride: float) -> Tensor:
        """H for ``points`` (B x N x 2, input pixels) on a map of ``size`` with ``stride``."""
        return self.conv(gaussian_heatmaps(points, size, stride, self.sigma))
