"""Import public ResNet generator checkpoints (pix2pix, CycleGAN, CUT, ASP, PyramidPix2Pix).

Those repositories save ``*_net_G.pth`` state dicts of the same ``ResnetGenerator``; the layout
(block count, norm, anti-aliasing, dropout, spectral norm) is read from the keys. Files are read
with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from vstain.errors import CheckpointError
from vstain.models.base import StainModel
from vstain.models.blocks.resnet_generator import GENERATOR_KEYS, ResnetGenerator
from vstain.models.checkpoint import describe_mismatch, sha256_file
from vstain.models.registry import create, model_configs

_LAYER = re.compile(r"^model\.(\d+)\.")


def load_generator_state(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.pth`` state dict, without a DataParallel ``module.`` prefix."""
    if not path.is_file():
        raise CheckpointError(f"Generator checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"Cannot read {path} as a PyTorch state dict ({e}). Give the "
            "*_net_G.pth file the pix2pix/CUT code saved."
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a generator state dict "
            "(names -> tensors) like latest_net_G.pth."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _weight(state: dict[str, Tensor], layer: int, sub: str = "") -> Tensor | None:
    prefix = f"model.{layer}.{sub}"
    return state.get(prefix + "weight", state.get(prefix + "weight_orig"))


def detect_generator_layout(state: dict[str, Tensor]) -> dict:
    """Generator config (``GENERATOR_KEYS`` plus in/out channels) implied by a state dict's keys."""
    first = _weight(state, 1)
    if first is None or first.ndim != 4 or first.shape[-1] != 7:
        raise CheckpointError(
            "This is not a ResNet generator state dict: it has no 7x7 conv 'model.1.weight'."
        )
    if "model.2.weight" in state:
        norm = "batch"
    elif "model.1.bias" in state:
        norm = "instance"
    else:
        norm = "none"
    antialias = "model.7.filt" in state
    start = 12 if antialias else 10
    n_blocks = 0
    while _weight(state, start + n_blocks, "conv_block.1.") is not None:
        n_blocks += 1
    dropout = n_blocks > 0 and _weight(state, start, "conv_block.6.") is not None
    last = max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    conv_keys = [k for k, v in state.items() if v.ndim == 4 and k.endswith(("weight", "_orig"))]
    spectral = [k.endswith("weight_orig") for k in conv_keys]
    if any(spectral) and not all(spectral):
        raise CheckpointError(
            "Spectral norm wraps only some convs of this generator; vstain "
            "supports it on all convs or none."
        )
    return {
        "in_channels": first.shape[1],
        "out_channels": _weight(state, last).shape[0],
        "ngf": first.shape[0],
        "n_blocks": n_blocks,
        "norm": norm,
        "dropout": dropout,
        "antialias": antialias,
        "antialias_up": f"model.{start + n_blocks}.filt" in state,
        "spectral_norm": all(spectral),
    }


def normalise_legacy_keys(state: dict[str, Tensor], norm: str) -> dict[str, Tensor]:
    """Drop InstanceNorm running stats saved by PyTorch < 0.4 (as the public code does) and add the
    ``num_batches_tracked`` counters BatchNorm gained in PyTorch 0.4.1."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    if norm == "instance":
        return {k: v for k, v in state.items() if not k.endswith(stats)}
    out = dict(state)
    if norm == "batch":
        for key in state:
            if key.endswith(".running_mean"):
                counter = key.removesuffix("running_mean") + "num_batches_tracked"
                out.setdefault(counter, torch.tensor(0))
    return out


def import_cut_generator(
    pth_path: str | os.PathLike,
    *,
    architecture: str = "pix2pix",
    n_blocks: int | None = None,
    norm: str | None = None,
    antialias: bool | None = None,
    antialias_up: bool | None = None,
    dropout: bool | None = None,
    **card_overrides,
) -> StainModel:
    """A registry model (``architecture``'s paper config) carrying a public generator's weights.

    The layout is detected; ``n_blocks``, ``norm``, ``antialias``, ``antialias_up`` and
    ``dropout``, when given, must match it. ``card_overrides`` complete the card (``markers``,
    ``pixel_size``, ...); save the result with :func:`vstain.models.save_checkpoint`.
    """
    path = Path(pth_path)
    state = load_generator_state(path)
    layout = detect_generator_layout(state)
    expected = {
        "n_blocks": n_blocks,
        "norm": norm,
        "antialias": antialias,
        "antialias_up": antialias_up,
        "dropout": dropout,
    }
    conflicts = [
        f"{k}={layout[k]!r} (not {v!r})"
        for k, v in expected.items()
        if v is not None and v != layout[k]
    ]
    if conflicts:
        raise CheckpointError(f"{path.name} holds a generator with {', '.join(conflicts)}.")
    if layout["in_channels"] != 3 or layout["out_channels"] != 3:
        raise CheckpointError(
            f"{path.name} maps {layout['in_channels']} to "
            f"{layout['out_channels']} channels; vstain needs RGB to RGB."
        )
    config = {**model_configs(architecture)["paper"], **{k: layout[k] for k in GENERATOR_KEYS}}
    card = {
        "parent": path.name,
        "parent_sha256": sha256_file(path),
        "training_data": "unknown (imported public checkpoint)",
        "notes": f"generator imported from {path.name}",
        **card_overrides,
    }
    model = create(architecture, config, **card)
    generator = getattr(model, "generator", None)
    if not isinstance(generator, ResnetGenerator):
        raise CheckpointError(f"Model {architecture!r} has no ResNet generator to import into.")
    state = normalise_legacy_keys(state, layout["norm"])
    problem = describe_mismatch(generator.state_dict(), state)
    if problem:
        raise CheckpointError(
            f"{path.name} does not fit the detected generator layout {layout}: {problem}."
        )
    generator.load_state_dict(state)
    return model.eval()
