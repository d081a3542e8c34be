"""Differentiable affine registration from point correspondences (K-Stain's HSKD, Eq. 4-6).

Points are (x, y) = (column, row). Pixel coordinates put pixel centres at integers; normalised
coordinates are those of ``torch.nn.functional.grid_sample`` with ``align_corners=False`` (the
image spans [-1, 1]). Affines are B x 3 x 3 homogeneous matrices acting on column vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalising_matrix(size: tuple[int, int], like: Tensor) -> Tensor:
    """3 x 3 map from pixel to normalised coordinates of an image of ``size`` = (H, W)."""
    h, w = size
    return torch.tensor(
        [[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]],
        dtype=like.dtype,
        device=like.device,
    )


def apply_affine(affine: Tensor, points: Tensor) -> Tensor:
    """``affine`` (B x 3 x 3) applied to ``points`` (B x N x 2)."""
    return points @ affine[:, :2, :2].transpose(1, 2) + affine[:, None, :2, 2]


def to_normalised(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel ``points`` (B x N x 2) in normalised coordinates of an image of ``size``."""
    return apply_affine(normalising_matrix(size, points)[None], points)


def to_pixel_affine(affine: Tensor, size: tuple[int, int]) -> Tensor:
    """A normalised-coordinate ``affine`` as a pixel-coordinate one (both images of ``size``)."""
    n = normalising_matrix(size, affine)
    return torch.linalg.inv(n) @ affine @ n


def fit_affine(src: Tensor, dst: Tensor, ridge: float, weights: Tensor | None = None) -> Tensor:
    """Least-squares affine taking ``src`` to ``dst`` (B x N x 2 each), Tikhonov-damped.

    Minimises ``sum_k w_k |M p~_k - q_k|^2 / sum_k w_k + ridge |M - [I | 0]|^2`` (``weights``
    w: B x N, default 1) over the top two rows ``M`` of the affine (``p~`` homogeneous), in
    closed form: ``M^T = (X^T W X / S + ridge I)^-1 (X^T W Y / S + ridge [I | 0]^T)``, ``S`` the
    sum of the weights. With ``ridge > 0`` the 3 x 3 system is positive definite for any points
    (coincident, collinear), so the answer is finite and falls back to the identity in the
    directions the points do not determine; ``ridge = 0`` is Eq. 4 exactly. Solved in float64.
    """
    b, n, _ = src.shape
    x = torch.cat([src, torch.ones_like(src[..., :1])], dim=2).double()
    y = dst.double()
    if weights is None:
        wx, total = x, n
    else:
        wx, total = x * weights.double()[..., None], weights.double().sum(dim=1)[:, None, None]
    eye = torch.eye(3, dtype=torch.float64, device=src.device)
    gram = wx.transpose(1, 2) @ x / total + ridge * eye
    rhs = wx.transpose(1, 2) @ y / total + ridge * eye[:, :2]
    rows = torch.linalg.solve(gram, rhs).transpose(1, 2)
    bottom = eye[2:].expand(b, 1, 3)
    return torch.cat([rows, bottom], dim=1).to(src.dtype)


def robust_fit_affine(
    src: Tensor, dst: Tensor, ridge: float, scale: float, iterations: int = 10
) -> Tensor:
    """``fit_affine`` made robust to wrong matches: iteratively reweighted least squares with
    Tukey's biweight, ``w = (1 - (r / s)^2)^2`` for residuals ``r`` below ``s`` (in the points'
    units), 0 above, starting from the plain fit. ``s`` falls geometrically from 8 x ``scale`` to
    ``scale`` over the first half of the ``iterations`` (graduated non-convexity: a plain fit far
    from the inliers' affine does not reject them all). The weights are held fixed (no gradient),
    so the answer is a weighted Eq. 4 and gradients reach the inlier points."""
    affine = fit_affine(src, dst, ridge)
    for i in range(iterations):
        s = scale * 8 ** max(0.0, 1 - 2 * i / iterations)
        with torch.no_grad():
            r = (apply_affine(affine, src) - dst).norm(dim=2)
            weights = (1 - (r / s) ** 2).clamp(min=0) ** 2 + 1e-6
        affine = fit_affine(src, dst, ridge, weights)
    return affine


def warp_affine(image: Tensor, affine: Tensor) -> Tensor:
    """``image`` resampled into the frame ``affine`` (normalised coordinates) maps it to.

    Each target pixel ``p`` samples the source bilinearly at ``A^-1 p`` (Eq. 5-6); samples outside
    the image take the nearest border value.
    """
    theta = torch.linalg.inv(affine)[:, :2]
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_affines(
    b: int, rotation: float, scale: float, shear: float, shift: float, like: Tensor
) -> Tensor:
    """B affines in normalised coordinates drawn uniformly with torch's random state.

    Rotation within +-``rotation`` radians, each axis' scale within 1 +- ``scale``, shear within
    +-``shear``, shift within +-``shift`` (fractions of the half-side), about the image centre.
    """
    r, sx, sy, h, tx, ty = (torch.rand(6, b, dtype=like.dtype, device=like.device) * 2 - 1).unbind()
    r, h = r * rotation, h * shear
    sx, sy = 1 + sx * scale, 1 + sy * scale
    cos, sin = torch.cos(r), torch.sin(r)
    zero, one = torch.zeros_like(r), torch.ones_like(r)
    rows = [
        [sx * cos, sx * (h * cos - sin), tx * shift],
        [sy * sin, sy * (h * sin + cos), ty * shift],
        [zero, zero, one],
    ]
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


def corner_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean distance between the images of the four image corners (+-1, +-1) under two affines
    (B x 3 x 3, normalised coordinates), B values in normalised units (half-sides)."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]).to(a)
    corners = corners.expand(a.shape[0], 4, 2)
    return (apply_affine(a, corners) - apply_affine(b, corners)).norm(dim=2).mean(dim=1)
