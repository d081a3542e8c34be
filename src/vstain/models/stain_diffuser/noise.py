"""Gaussian noise that is a function of the global pixel position, so overlapping tiles share it.

The plane is cut into blocks of ``BLOCK`` x ``BLOCK`` pixels; block ``(by, bx)`` of stream ``key``
is ``torch.randn`` from a generator seeded with ``SeedSequence([*key, by, bx])``. A window of any
size at any origin reads the same values at the same global pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BLOCK = 64
#: Block indices are shifted by this so that negative positions (mirror-padded borders) work.
_OFFSET = 2**31


def _block(key: tuple[int, ...], by: int, bx: int, channels: int) -> Tensor:
    entropy = [*key, by + _OFFSET, bx + _OFFSET]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randn(channels, BLOCK, BLOCK, generator=generator)


def position_noise(
    key: tuple[int, ...], channels: int, size: tuple[int, int], origin: tuple[int, int]
) -> Tensor:
    """Noise ``channels`` x H x W (CPU, float32) of the window at global ``origin`` (y, x).

    ``key`` (non-negative integers) names the stream: seed, sample, branch, sampling step.
    """
    (h, w), (y0, x0) = size, origin
    by0, bx0 = y0 // BLOCK, x0 // BLOCK
    by1, bx1 = (y0 + h - 1) // BLOCK, (x0 + w - 1) // BLOCK
    rows = [
        torch.cat([_block(key, by, bx, channels) for bx in range(bx0, bx1 + 1)], 2)
        for by in range(by0, by1 + 1)
    ]
    plane = torch.cat(rows, 1)
    oy, ox = y0 - by0 * BLOCK, x0 - bx0 * BLOCK
    return plane[:, oy : oy + h, ox : ox + w]


def batch_noise(
    key: tuple[int, ...], shape: torch.Size, origins: list[tuple[int, int]], like: Tensor
) -> Tensor:
    """Noise of ``shape`` (B x C x H x W), item ``b`` at ``origins[b]``, on ``like``'s device."""
    b, c, h, w = shape
    noise = torch.stack([position_noise(key, c, (h, w), origins[i]) for i in range(b)])
    return noise.to(device=like.device, dtype=like.dtype)
