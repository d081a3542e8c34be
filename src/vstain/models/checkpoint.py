"""Checkpoints: one ``.safetensors`` file with the model card as JSON in its metadata.

Loading reads tensors with safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from vstain.errors import CheckpointError, ModelError
from vstain.io.atomic import write_atomically
from vstain.models.base import ModelCard, StainModel
from vstain.models.registry import build

CARD_KEY = "vstain_card"
FORMAT_KEY = "vstain_format"
FORMAT_VERSION = "1"


def beside(checkpoint: str | os.PathLike, suffix: str) -> Path:
    """A file next to a checkpoint: ``run.safetensors``, ``.losses.csv`` -> ``run.losses.csv``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + suffix)


def save_checkpoint(model: StainModel, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights and card to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"Cannot save {path.name}: folder {path.parent} does not exist.")
    tensors = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    metadata = {CARD_KEY: model.card.to_json(), FORMAT_KEY: FORMAT_VERSION}
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_card(path: str | os.PathLike) -> ModelCard:
    """The model card stored in checkpoint ``path``, without loading weights."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .safetensors checkpoint.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path} is not a safetensors checkpoint ({e}). It may be truncated, or a pickle / "
            "torch.save file, which vstain never loads. Import a public pix2pix/CUT/BCI "
            "generator with: vstain import GEN.pth --out MODEL.safetensors"
        ) from e
    if CARD_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but has no vstain model card; it was "
            "not written by vstain.models.save_checkpoint."
        )
    try:
        return ModelCard.from_json(metadata[CARD_KEY])
    except ModelError as e:
        raise CheckpointError(f"Model card in {path}: {e}") from e


def describe_mismatch(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], limit: int = 5
) -> str | None:
    """Which keys and shapes of ``given`` differ from ``expected`` (first few); None if they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: file {tuple(given[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    parts = [
        f"{len(items)} {what} (first: {', '.join(items[:limit])})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    return "; ".join(parts) or None


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> StainModel:
    """Rebuild the model a checkpoint's card describes and load its weights strictly (eval mode)."""
    path = Path(path)
    card = read_card(path)
    try:
        model = build(card)
    except ModelError as e:
        raise CheckpointError(f"Cannot rebuild the model of {path.name}: {e}") from e
    load_weights(model, path)
    if device is not None:
        model.to(device)
    return model.eval()


def load_weights(model: StainModel, path: str | os.PathLike, part: str | None = None) -> None:
    """Load a checkpoint's weights into ``model`` strictly; CheckpointError naming what differs.
    With ``part`` (a submodule's name, e.g. ``detector``) only that submodule's weights are loaded
    and checked; the rest of ``model`` is left as it is."""
    path = Path(path)
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"Cannot read the weights of {path} ({e}); copy it again.") from e
    expected = model.state_dict()
    if part is not None:
        expected, tensors = (_submodule(d, part) for d in (expected, tensors))
        if not expected:
            parts = ", ".join(sorted({k.split(".")[0] for k in model.state_dict()}))
            raise CheckpointError(
                f"{model.card.architecture} has no part named {part!r} (its parts: {parts})."
            )
    problem = describe_mismatch(expected, tensors)
    if problem:
        raise CheckpointError(
            f"{path.name} does not hold weights of {model.card.architecture} with this "
            f"config: {problem}. The file may be damaged, its card edited, or it belongs to "
            "another model."
        )
    model.load_state_dict(tensors, strict=part is None)


def _submodule(tensors: Mapping[str, Tensor], part: str) -> dict[str, Tensor]:
    """The entries of a state dict that belong to submodule ``part``."""
    return {k: v for k, v in tensors.items() if k.startswith(part + ".")}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (for ``parent_sha256``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_evaluation(path: str | os.PathLike, data: str, scores: dict, options: dict) -> None:
    """Store held-out ``scores`` (of `vstain.train.evaluate` on ``data``) in the card of
    checkpoint ``path``, under ``metrics["heldout"]``; the weights are rewritten unchanged."""
    model = load_checkpoint(path)
    heldout = {"data": data, "options": options, **scores}
    model.card = replace(model.card, metrics={**model.card.metrics, "heldout": heldout})
    save_checkpoint(model, path)


def set_stain_reference(path: str | os.PathLike, reference: dict[str, dict]) -> None:
    """Store stain statistics of the training H&E (`vstain.color.stain_reference`, keyed by
    method) in the card of checkpoint ``path``, replacing those of the same methods; the weights
    are rewritten unchanged. Invalid statistics raise ModelError."""
    model = load_checkpoint(path)
    model.card = replace(model.card, stain_reference={**model.card.stain_reference, **reference})
    save_checkpoint(model, path)
