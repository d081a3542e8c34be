"""Optimiser and step state beside a checkpoint (``CKPT.state.safetensors``), never pickled."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.optim import Optimizer

from vstain.errors import CheckpointError


def state_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".state.safetensors")


def save_state(checkpoint: Path, optimizers: dict[str, Optimizer], step: int) -> Path:
    """Write every optimiser's tensors (and, as JSON, its param groups and scalars) atomically."""
    tensors, meta = {}, {"step": step, "optimizers": {}}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars = {}
        for pid, entries in sd["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{name}/{pid}/{key}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars[f"{pid}/{key}"] = value
        meta["optimizers"][name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    path = state_path(checkpoint)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"vstain_train_state": json.dumps(meta)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_state(checkpoint: Path, optimizers: dict[str, Optimizer]) -> int:
    """Restore the optimisers saved beside ``checkpoint``; returns the step to continue from."""
    path = state_path(checkpoint)
    try:
        tensors = load_file(path)
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = json.loads(f.metadata()["vstain_train_state"])
    except (FileNotFoundError, SafetensorError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"Cannot resume from {checkpoint.name}: its training state "
            f"{path.name} is missing or unreadable ({e}). Start a new run "
            "instead of --resume."
        ) from e
    if set(meta["optimizers"]) != set(optimizers):
        raise CheckpointError(
            f"{path.name} holds optimisers {sorted(meta['optimizers'])}, the "
            f"model has {sorted(optimizers)}: it belongs to another model."
        )
    for name, opt in optimizers.items():
        saved = meta["optimizers"][name]
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            opt_name, pid, entry = key.split("/", 2)
            if opt_name == name:
                state.setdefault(int(pid), {})[entry] = value
        for key, value in saved["scalars"].items():
            pid, entry = key.split("/", 1)
            state.setdefault(int(pid), {})[entry] = value
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return int(meta["step"])
