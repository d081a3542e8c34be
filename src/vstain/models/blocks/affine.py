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


def fit_affine(src: Tensor, dst: Tensor, ridge: float) -> Tensor:
    """Least-squares affine taking ``src`` to ``dst`` (B x N x 2 each), Tikhonov-damped.

    Minimises ``mean_k |M p~_k - q_k|^2 + ridge |M - [I | 0]|^2`` over the top two rows ``M`` of
    the affine (``p~`` homogeneous), in closed form: ``M^T = (X^T X / N + ridge I)^-1 (X^T Y / N +
    ridge [I | 0]^T)``. With ``ridge > 0`` the 3 x 3 system is positive definite for any points
    (coincident, collinear), so the answer is finite and falls back to the identity in the
    directions the points do not determine; ``ridge = 0`` is Eq. 4 exactly. Solved in float64.
    """
    b, n, _ = src.shape
    x = torch.cat([src, torch.ones_like(src[..., :1])], dim=2).double()
    y = dst.double()
    eye = torch.eye(3, dtype=torch.float64, device=src.device)
    gram = x.transpose(1, 2) @ x / n + ridge * eye
    rhs = x.transpose(1, 2) @ y / n + ridge * eye[:, :2]
    rows = torch.linalg.solve(gram, rhs).transpose(1, 2)
    bottom = eye[2:].expand(b, 1, 3)
    return torch.cat([rows, bottom], dim=1).to(src.dtype)


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
