"""A local implicit function: one MLP, shared by all pixels, from a pixel's feature
neighbourhood and coordinates to its output value.

For pixel (i, j) the MLP input is the (2k+1) x (2k+1) neighbourhood of the feature map (zero
outside it, ordered as ``F.unfold``: channel, then row, then column) followed by the pixel's two
normalised coordinates (y, x). Two evaluation paths share the weights:

- :meth:`LocalImplicitFunction.forward` queries every pixel. The first linear layer applied to
  every unfolded neighbourhood is exactly a (2k+1) x (2k+1) convolution with that layer's weights,
  so it runs as one (no H x W x C(2k+1)^2 unfold in memory); the other layers act per pixel.
- :meth:`LocalImplicitFunction.query` gathers the neighbourhoods of chosen pixels only (training on
  a random subset of pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: "patch": (i, j) over the input, in [-1, 1]. "cell": position inside the ``period``-px cell of a
#: grid anchored at the input's origin, in [-1, 1].
COORDS = ("patch", "cell")


def normalised_coords(index: Tensor, size: int, mode: str, period: int) -> Tensor:
    """Pixel indices along one axis -> coordinates in [-1, 1] (pixel centres)."""
    if mode == "patch":
        return (2 * index + 1) / size - 1
    return (2 * (index % period) + 1) / period - 1


class LocalImplicitFunction(nn.Module):
    """Shared MLP (Linear + ReLU for each of ``hidden``, then Linear to ``out_channels``)."""

    def __init__(
        self,
        channels: int,
        k: int,
        hidden: Sequence[int],
        coords: str,
        period: int,
        out_channels: int = 3,
    ):
        super().__init__()
        if k < 0 or not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"need k >= 0 and positive hidden widths, got k={k}, {list(hidden)}")
        if coords not in COORDS:
            raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")
        self.channels, self.k, self.coords, self.period = channels, k, coords, period
        self.kernel = 2 * k + 1
        self.first = nn.Linear(channels * self.kernel**2 + 2, hidden[0])
        rest: list[nn.Module] = [nn.ReLU(inplace=True)]
        for a, b in zip(hidden, [*hidden[1:], out_channels], strict=True):
            rest += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.rest = nn.Sequential(*rest[:-1])  # the output layer is linear

    def _coords(self, ys: Tensor, xs: Tensor, h: int, w: int) -> Tensor:
        """(..., 2) coordinates (y, x) of pixels at rows ``ys`` and columns ``xs``."""
        y = normalised_coords(ys.float(), h, self.coords, self.period)
        x = normalised_coords(xs.float(), w, self.coords, self.period)
        return torch.stack([y, x], -1)

    def forward(self, feats: Tensor) -> Tensor:
        """Outputs at every pixel: B x C x H x W -> B x out x H x W."""
        c, h, w = feats.shape[1:]
        n_feat = c * self.kernel**2
        weight = self.first.weight[:, :n_feat].view(-1, c, self.kernel, self.kernel)
        hidden = F.conv2d(feats, weight, self.first.bias, padding=self.k)
        rows = torch.arange(h, device=feats.device)[:, None].expand(h, w)
        cols = torch.arange(w, device=feats.device)[None, :].expand(h, w)
        coords = self._coords(rows, cols, h, w).to(feats.dtype)  # H x W x 2
        hidden = hidden.permute(0, 2, 3, 1) + coords @ self.first.weight[:, n_feat:].T
        return self.rest(hidden).permute(0, 3, 1, 2)

    def neighbourhoods(self, feats: Tensor, index: Tensor) -> Tensor:
        """Unfolded neighbourhoods B x N x C(2k+1)^2 of the pixels at flat indices ``index``."""
        b, c, w = feats.shape[0], feats.shape[1], feats.shape[3]
        k = self.k
        padded = F.pad(feats, (k, k, k, k)).flatten(2)  # B x C x (H+2k)(W+2k)
        ys, xs = index // w, index % w
        offsets = torch.arange(self.kernel, device=feats.device)
        # padded position of neighbour (dy, dx) of (y, x) is (y + dy, x + dx) for dy, dx in 0..2k
        rows = ys[:, None, None, :] + offsets[None, :, None, None]
        cols = xs[:, None, None, :] + offsets[None, None, :, None]
        flat = (rows * (w + 2 * k) + cols).flatten(1)  # B x K*K*N, row-major over (dy, dx)
        gathered = padded.gather(2, flat[:, None, :].expand(b, c, flat.shape[1]))
        return gathered.view(b, c * self.kernel**2, -1).transpose(1, 2)

    def query(self, feats: Tensor, index: Tensor) -> Tensor:
        """Outputs B x out x N at the pixels with flat indices ``index`` (B x N, row-major)."""
        h, w = feats.shape[-2:]
        coords = self._coords(index // w, index % w, h, w).to(feats.dtype)
        inputs = torch.cat([self.neighbourhoods(feats, index), coords], -1)
        return self.rest(self.first(inputs)).transpose(1, 2)
