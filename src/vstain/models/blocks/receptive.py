"""Receptive-field radius of convolutional stacks, from which tile halos are derived.

:func:`receptive_field` bounds the radius symmetrically (``ceil((k - 1) / 2)`` per layer);
:func:`input_span` follows index ranges exactly, which matters for even kernels (U-Nets).

The radius counts convolutions only: instance normalisation makes every output depend on the
whole input through its statistics, which no finite halo captures (see docs/models/framework.md).
"""

from __future__ import annotations

import math

from torch import nn

#: Layers that do not widen the receptive field (pads, norms, activations, dropout).
POINTWISE = (
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.ZeroPad2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Identity,
)


def receptive_field(
    module: nn.Module, radius: float = 0.0, jump: float = 1.0
) -> tuple[float, float]:
    """(radius, jump) after ``module`` given those before it, both in input pixels.

    ``jump`` is the input-pixel spacing of the module's output grid. Blocks other than convolutions,
    ``nn.Sequential`` and :data:`POINTWISE` layers must have a ``receptive_field(radius, jump)``
    method.
    """
    if hasattr(module, "receptive_field"):
        return module.receptive_field(radius, jump)
    if isinstance(module, nn.Conv2d):
        k, s, d = module.kernel_size[0], module.stride[0], module.dilation[0]
        return radius + math.ceil(d * (k - 1) / 2) * jump, jump * s
    if isinstance(module, nn.ConvTranspose2d):
        k, s = module.kernel_size[0], module.stride[0]
        jump = jump / s
        return radius + math.ceil((k - 1) / 2) * jump, jump
    if isinstance(module, nn.Sequential):
        for child in module:
            radius, jump = receptive_field(child, radius, jump)
        return radius, jump
    if isinstance(module, POINTWISE):
        return radius, jump
    raise TypeError(
        f"receptive field of {type(module).__name__} is unknown; give it a "
        "receptive_field(radius, jump) method"
    )


def halo_for(module: nn.Module, multiple: int) -> int:
    """Receptive-field radius of ``module`` rounded up to a multiple of ``multiple`` px."""
    radius, _ = receptive_field(module)
    return math.ceil(radius / multiple) * multiple


_PADS = (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)


def input_span(module: nn.Module, lo: int, hi: int) -> tuple[int, int]:
    """Input indices (one axis, inclusive) that output indices ``lo..hi`` of ``module`` depend
    on, on an unbounded grid. Exact for convolutions and transposed convolutions of any kernel,
    stride and padding; other blocks need an ``input_span(lo, hi)`` method."""
    if hasattr(module, "input_span"):
        return module.input_span(lo, hi)
    if isinstance(module, nn.Conv2d):
        k, s, p, d = module.kernel_size[0], module.stride[0], module.padding[0], module.dilation[0]
        return s * lo - p, s * hi - p + d * (k - 1)
    if isinstance(module, nn.ConvTranspose2d):  # out o = s * i - p + j, j in 0..k-1
        k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
        return -((k - 1 - lo - p) // s), (hi + p) // s
    if isinstance(module, nn.Sequential):
        for child in reversed(module):
            lo, hi = input_span(child, lo, hi)
        return lo, hi
    if isinstance(module, _PADS):
        return lo - module.padding[0], hi - module.padding[0]
    if isinstance(module, POINTWISE):
        return lo, hi
    raise TypeError(f"input span of {type(module).__name__} is unknown; give it input_span(lo, hi)")
