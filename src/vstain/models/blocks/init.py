"""Weight initialisation of the pix2pix / CUT family."""

from torch import nn


def init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """pix2pix's "normal" init: conv/linear weights N(0, gain), batch-norm weights N(1, gain).

    Biases are zeroed.

    Spectrally normalised layers are initialised through their raw ``weight_orig``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(getattr(m, "weight_orig", m.weight), 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
