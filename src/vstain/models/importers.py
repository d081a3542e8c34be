"""Import public generator checkpoints (``*_net_G.pth``) as vstain models.

pix2pix, CycleGAN, CUT, ASP and PyramidPix2Pix save state dicts of a ResNet generator, pix2pix's
U-Net or BCI's attention U-Net; :mod:`vstain.models.import_layouts` reads which from the keys.
Files are read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from vstain.errors import CheckpointError, ModelError
from vstain.models.base import StainModel
from vstain.models.checkpoint import describe_mismatch, save_checkpoint, sha256_file
from vstain.models.import_layouts import PublicLayout, detect_layout
from vstain.models.registry import create, list_models, model_configs

#: What an imported card says of its training data and origin.
IMPORTED = "imported public checkpoint"
_GATING = re.compile(r"\.gating\.")


def load_generator_state(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.pth`` state dict, without a DataParallel ``module.`` prefix."""
    if not path.is_file():
        raise CheckpointError(f"Generator checkpoint {path} does not exist; check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a pickled object
        raise CheckpointError(
            f"Cannot read {path}: it holds Python objects besides tensors, which vstain never "
            "unpickles. Give the *_net_G.pth state dict the pix2pix/CUT/BCI code saved."
        ) from e
    except Exception as e:
        reason = (str(e).splitlines() or [""])[0]
        raise CheckpointError(
            f"Cannot read {path} as a PyTorch state dict ({type(e).__name__}: {reason}). "
            "Give the *_net_G.pth file the pix2pix/CUT/BCI code saved."
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a generator state dict "
            "(names -> tensors) like latest_net_G.pth."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def canonical_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the attention U-Net's ``gating`` keys: its public block lists the modules of
    ``model.0``-``model.3`` again under ``gating``, so they must hold the same tensors."""
    out = {}
    for key, value in state.items():
        if ".gating." not in key:
            out[key] = value
            continue
        twin = state.get(_GATING.sub(".model.", key))
        if twin is None or not torch.equal(twin, value):
            raise CheckpointError(
                f"{key} has no equal twin under 'model.'; this is not an attention U-Net "
                "saved by the BCI code."
            )
    return out


def normalise_legacy_keys(
    state: dict[str, Tensor], expected: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Drop norm statistics the model does not keep (InstanceNorm running stats saved by PyTorch
    < 0.4, dropped by the public code too) and add the ``num_batches_tracked`` counters BatchNorm
    gained in PyTorch 0.4.1."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    out = {k: v for k, v in state.items() if k in expected or not k.endswith(stats)}
    for key in expected:
        mean = key.removesuffix("num_batches_tracked") + "running_mean"
        if key.endswith("num_batches_tracked") and mean in out:
            out.setdefault(key, torch.tensor(0))
    return out


def import_generator(
    pth_path: str | os.PathLike,
    *,
    architecture: str | None = None,
    dropout: bool | None = None,
    expected: dict | None = None,
    **card_overrides,
) -> StainModel:
    """A registry model carrying a public generator's weights (eval mode).

    The layout is detected from the keys. ``architecture`` defaults to the layout's model
    (``pix2pix``, ``pix2pix-unet`` or ``pyramid-pix2pix-unet``); its ``paper`` config gives the
    training settings. ``dropout``: a U-Net's cannot be read from its weights (default: pix2pix's,
    on); a ResNet's must match. ``expected`` generator settings (e.g. ``{"n_blocks": 9}``) must
    match the file. ``card_overrides`` complete the card (``markers``, ``pixel_size``, ...); save
    the result with :func:`vstain.models.save_checkpoint`.
    """
    path = Path(pth_path)
    state = canonical_keys(load_generator_state(path))
    layout = detect_layout(state)
    generator = dict(layout.generator)
    if "num_downs" in generator:
        generator["dropout"] = True if dropout is None else dropout
    elif dropout is not None:
        expected = {**(expected or {}), "dropout": dropout}
    conflicts = [
        f"{k}={generator.get(k)!r} (not {v!r})"
        for k, v in (expected or {}).items()
        if generator.get(k) != v
    ]
    if conflicts:
        raise CheckpointError(f"{path.name} holds a generator with {', '.join(conflicts)}.")
    if (layout.in_channels, layout.out_channels) != (3, 3):
        raise CheckpointError(
            f"{path.name} maps {layout.in_channels} to {layout.out_channels} channels; "
            "vstain needs RGB to RGB."
        )
    sha256 = sha256_file(path)
    card = {
        "parent": path.name,
        "parent_sha256": sha256,
        "training_data": f"unknown ({IMPORTED})",
        "notes": f"{IMPORTED} {path.name} ({layout.name})",
        **card_overrides,
        "provenance": {
            "kind": "import",
            "source": IMPORTED,
            "layout": layout.name,
            "file": path.name,
            "sha256": sha256,
        },
    }
    model = _create(architecture or layout.architecture, layout, generator, card)
    if "tile_size" not in card_overrides and model.card.halo > model.card.tile_size:
        # a tile as large as the halo keeps a window at most 9 tiles' worth of pixels
        model.card = replace(model.card, tile_size=model.card.halo)
    state = normalise_legacy_keys(state, model.generator.state_dict())
    problem = describe_mismatch(model.generator.state_dict(), state)
    if problem:
        raise CheckpointError(
            f"{path.name} does not fit the detected {layout.name} layout {generator}: {problem}."
        )
    model.generator.load_state_dict(state)
    return model.eval()


def _create(architecture: str, layout: PublicLayout, generator: dict, card: dict) -> StainModel:
    """``architecture``'s paper config with the detected generator; CheckpointError naming the
    models that fit when this one has no such generator."""
    fits = [m for m in list_models() if set(generator) <= set(model_configs(m)["paper"])]
    if architecture not in fits:
        raise CheckpointError(
            f"{architecture!r} has no {layout.name} generator to import into; use one of "
            f"{', '.join(fits)}."
        )
    try:
        return create(architecture, {**model_configs(architecture)["paper"], **generator}, **card)
    except ModelError as e:
        raise CheckpointError(f"Cannot build {architecture} for {layout.name}: {e}") from e


def import_checkpoint(pth_path: str | os.PathLike, out: str | os.PathLike, **options) -> StainModel:
    """:func:`import_generator` (``options``: its arguments and card fields), saved to ``out``."""
    model = import_generator(pth_path, **options)
    save_checkpoint(model, out)
    return model
