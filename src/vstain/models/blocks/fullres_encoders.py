"""Encoders that keep full resolution: a 3x3 conv stack and a Swin Transformer with patch size 1.

Both map B x 3 x H x W to B x C x H x W (no pooling, no patch merging) and know their receptive
field (``receptive_field(radius, jump)``, see :mod:`vstain.models.blocks.receptive`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vstain.models.blocks.receptive import receptive_field
from vstain.models.blocks.resnet_generator import norm_layer
from vstain.triton_guard import guard_triton

#: Normalisations of the conv encoder: per-pixel ones only, so tiles stay exact.
CONV_NORMS = ("none", "batch")


class ConvEncoder(nn.Module):
    """3x3 convolutions, stride 1, zero padding; ``channels[i]`` outputs for layer i.

    Norm (``"batch"``) and ReLU follow every layer but the last, whose features are left linear
    for fusion.
    """

    def __init__(self, channels: Sequence[int], in_channels: int = 3, norm: str = "none"):
        super().__init__()
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"conv_channels must be positive widths, got {list(channels)}")
        if norm not in CONV_NORMS:
            raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {norm!r}")
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(in_channels if i == 0 else channels[i - 1], c, 3, padding=1))
            if i < len(channels) - 1:
                if norm != "none":  # no Identity layer: checkpoints keep their keys
                    layers.append(norm_layer(norm, c))
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        return receptive_field(self.layers, radius, jump)


class SwinEncoder(nn.Module):
    """Swin Transformer at full resolution: 1x1 patch embedding + LayerNorm, ``depth`` blocks
    alternating plain and shifted (by ``window // 2``) windows, final LayerNorm.

    The blocks are torchvision's ``SwinTransformerBlock`` (relative position bias, no absolute
    position embedding). Windows start at the input's origin, so H and W must be multiples of
    ``window``, and tiles whose origins are multiples of ``window`` see the same windows as the
    whole image.
    """

    def __init__(
        self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        if depth < 1 or window < 2 or dim % heads:
            raise ValueError(
                f"Swin needs depth >= 1, window >= 2 and swin_dim divisible by swin_heads, "
                f"got depth {depth}, window {window}, dim {dim}, heads {heads}"
            )
        self.window, self.depth, self.out_channels = window, depth, dim
        self.embed = nn.Conv2d(3, dim, 1)
        self.embed_norm = nn.LayerNorm(dim)
        shifts = [0 if i % 2 == 0 else window // 2 for i in range(depth)]
        guard_triton()
        from torchvision.models.swin_transformer import SwinTransformerBlock

        self.blocks = nn.Sequential(
            *(
                SwinTransformerBlock(dim, heads, [window, window], [s, s], mlp_ratio=mlp_ratio)
                for s in shifts
            )
        )
        self.norm = nn.LayerNorm(dim)
        for m in self.modules():  # torchvision's SwinTransformer initialisation
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed_norm(self.embed(x).permute(0, 2, 3, 1))  # B x H x W x C
        return self.norm(self.blocks(tokens)).permute(0, 3, 1, 2)

    def reach(self) -> int:
        """Farthest input pixel (px) an output pixel attends to, through all blocks.

        The last block sees the pixel's own window (up to ``window - 1`` px away); each earlier
        block, on the other window grid, widens that span by ``window // 2`` on each side.
        """
        return self.window - 1 + (self.window // 2) * (self.depth - 1)

    def receptive_field(self, radius: float, jump: float) -> tuple[float, float]:
        return radius + self.reach() * jump, jump
