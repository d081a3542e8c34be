"""Which public generator a state dict holds, read from its keys and shapes alone.

Known layouts: the ResNet generator of pix2pix / CycleGAN / CUT / ASP / PyramidPix2Pix
(``resnet_6blocks``, ``resnet_9blocks``, any block count), pix2pix's U-Net (``unet_128``,
``unet_256``) and the BCI repository's ``attention_unet_32``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from vstain.errors import CheckpointError

KNOWN_LAYOUTS = (
    "resnet_6blocks / resnet_9blocks (pix2pix, CycleGAN, CUT, ASP, PyramidPix2Pix), "
    "unet_128 / unet_256 (pix2pix), attention_unet_32 (BCI PyramidPix2Pix)"
)
_LAYER = re.compile(r"^model\.(\d+)\.")


@dataclass(frozen=True)
class PublicLayout:
    """A detected generator: its public name, generator config and default registry model."""

    name: str
    architecture: str
    generator: dict
    in_channels: int
    out_channels: int


def detect_layout(state: dict[str, Tensor]) -> PublicLayout:
    """The public generator layout of ``state`` (keys without a ``module.`` prefix)."""
    if _is_conv(state.get("model.model.0.weight"), 4):
        return detect_unet_layout(state)
    if _is_conv(_weight(state, "model.1."), 7):
        return detect_resnet_layout(state)
    raise CheckpointError(f"This state dict is not a known generator layout: {KNOWN_LAYOUTS}.")


def _is_conv(weight: Tensor | None, size: int) -> bool:
    return weight is not None and weight.ndim == 4 and weight.shape[-1] == size


def _weight(state: dict[str, Tensor], prefix: str) -> Tensor | None:
    """The weight of the module at ``prefix``, spectrally normalised or not."""
    return state.get(prefix + "weight", state.get(prefix + "weight_orig"))


def _norm(state: dict[str, Tensor], norm_key: str, bias_key: str) -> str:
    """Batch norm has a weight; instance norm (affine-free) leaves a conv bias; none neither."""
    if norm_key in state:
        return "batch"
    return "instance" if bias_key in state else "none"


def detect_resnet_layout(state: dict[str, Tensor]) -> PublicLayout:
    """A ResNet generator: norm, anti-aliasing, block count, dropout, spectral norm."""
    first = _weight(state, "model.1.")
    antialias = "model.7.filt" in state
    start = 12 if antialias else 10
    n_blocks = 0
    while _weight(state, f"model.{start + n_blocks}.conv_block.1.") is not None:
        n_blocks += 1
    # with dropout the second conv is conv_block.6; without it, conv_block.6 is a norm (1-D)
    second = _weight(state, f"model.{start}.conv_block.6.")
    last = max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    conv_keys = [k for k, v in state.items() if v.ndim == 4 and k.endswith(("weight", "_orig"))]
    spectral = [k.endswith("weight_orig") for k in conv_keys]
    if any(spectral) and not all(spectral):
        raise CheckpointError(
            "Spectral norm wraps only some convs of this generator; vstain "
            "supports it on all convs or none."
        )
    generator = {
        "ngf": first.shape[0],
        "n_blocks": n_blocks,
        "norm": _norm(state, "model.2.weight", "model.1.bias"),
        "dropout": second is not None and second.ndim == 4,
        "antialias": antialias,
        "antialias_up": f"model.{start + n_blocks}.filt" in state,
        "spectral_norm": all(spectral),
    }
    return PublicLayout(
        f"resnet_{n_blocks}blocks",
        "pix2pix",
        generator,
        first.shape[1],
        _weight(state, f"model.{last}.").shape[0],
    )


def detect_unet_layout(state: dict[str, Tensor]) -> PublicLayout:
    """A U-Net: depth (nested blocks), norm, attention gates. Dropout leaves no trace."""
    first = state["model.model.0.weight"]
    block, num_downs = "model.model.1.", 1
    while f"{block}model.1.weight" in state:
        num_downs += 1
        block += "model.3."
    attention = "model.model.1.theta.weight" in state
    generator = {
        "ngf": first.shape[0],
        "num_downs": num_downs,
        "norm": _norm(state, "model.model.1.model.2.weight", "model.model.0.bias"),
        "dropout": False,
        "attention": attention,
    }
    kind = "attention_unet" if attention else "unet"
    return PublicLayout(
        f"{kind}_{2**num_downs}",
        "pyramid-pix2pix-unet" if attention else "pix2pix-unet",
        generator,
        first.shape[1],
        state["model.model.3.weight"].shape[1],  # transposed conv: (in, out, k, k)
    )
