"""Training state beside a checkpoint (``CKPT.state.safetensors``), so a run can resume exactly.

The file holds the optimisers' tensors (``optim/<name>/<param>/<key>``), with EMA the raw training
weights (``model/<key>``; the checkpoint itself then holds the EMA weights), and as JSON metadata
the step, the seed, the optimisers' param groups and non-tensor entries, the AMP scaler's state and
the EMA's decay and update count. Nothing is pickled. Random state needs no saving: the trainer
derives it from (seed, step).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.optim import Optimizer

from vstain.errors import CheckpointError
from vstain.io.atomic import write_atomically
from vstain.io.limits import loads_bounded
from vstain.models.checkpoint import beside

META_KEY = "vstain_train_state"


@dataclass
class RunState:
    """Where a run stands: steps done, seed, AMP scaler state, EMA decay and EMA update count."""

    step: int
    seed: int
    scaler: dict | None = None
    ema_decay: float | None = None
    ema_updates: int = 0


def state_path(checkpoint: Path) -> Path:
    """``a.safetensors`` -> ``a.state.safetensors``."""
    return beside(checkpoint, ".state.safetensors")


def _optimizer_entries(name: str, opt: Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimiser's state tensors by key, and its JSON part (param groups, other entries)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{name}/{pid}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_state(
    checkpoint: Path,
    run: RunState,
    optimizers: Mapping[str, Optimizer],
    weights: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write the state of ``optimizers``, ``run`` and optional raw ``weights`` atomically."""
    tensors: dict[str, Tensor] = {}
    meta: dict = {"run": asdict(run), "optimizers": {}}
    for name, opt in optimizers.items():
        opt_tensors, meta["optimizers"][name] = _optimizer_entries(name, opt)
        tensors |= opt_tensors
    for key, value in (weights or {}).items():
        tensors[f"model/{key}"] = value.detach().to("cpu", copy=True).contiguous()
    path = state_path(checkpoint)
    return write_atomically(
        path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)})
    )


def _restore_optimizer(opt: Optimizer, name: str, saved: dict, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict] = {}
    prefix = f"optim/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, entry = key.removeprefix(prefix).split("/", 1)
            state.setdefault(int(pid), {})[entry] = value
    for key, value in saved["scalars"].items():
        pid, entry = key.split("/", 1)
        state.setdefault(int(pid), {})[entry] = value
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def load_state(
    checkpoint: Path, optimizers: Mapping[str, Optimizer]
) -> tuple[RunState, dict[str, Tensor]]:
    """Restore ``optimizers`` from the state beside ``checkpoint``; the run state and raw weights.

    The weights are empty when the run had no EMA (the checkpoint then holds the raw weights).
    """
    path = state_path(checkpoint)
    try:
        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            meta = loads_bounded((f.metadata() or {})[META_KEY])
        run = RunState(**meta["run"])
    except (FileNotFoundError, SafetensorError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"Cannot resume from {checkpoint.name}: its training state {path.name} is missing or "
            f"unreadable ({e}). Start a new run instead of resuming."
        ) from e
    if set(meta["optimizers"]) != set(optimizers):
        raise CheckpointError(
            f"{path.name} holds optimisers {sorted(meta['optimizers'])} but the model has "
            f"{sorted(optimizers)}: the state belongs to another model."
        )
    for name, opt in optimizers.items():
        _restore_optimizer(opt, name, meta["optimizers"][name], tensors)
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    return run, weights
