"""Test-time augmentation over the eight flips and quarter turns of an image (dihedral group)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: (quarter turns, horizontal flip first); the identity comes first.
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))


def transform(x: Tensor, turns: int, flip: bool) -> Tensor:
    """Flip ``x`` (B x C x H x W) left-right if ``flip``, then rotate it by ``turns`` x 90 deg."""
    return torch.rot90(x.flip(-1) if flip else x, turns, (-2, -1))


def untransform(y: Tensor, turns: int, flip: bool) -> Tensor:
    """Inverse of :func:`transform`."""
    y = torch.rot90(y, -turns, (-2, -1))
    return y.flip(-1) if flip else y


def dihedral_outputs(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn`` on the eight transforms of ``x``, each mapped back: 8 x B x C x H x W.

    One transform runs at a time, so memory stays that of a single call.
    """
    return torch.stack([untransform(fn(transform(x, t, f)), t, f) for t, f in DIHEDRAL])
