"""One training loop for every registered model: steps, validation, checkpoints, resume, cancel.

Determinism: the batch of step ``s`` and torch's random state during it are functions of
``(seed, s)`` only, so a run resumed from a checkpoint continues exactly as an uninterrupted run
with the same seed would (tested). The optimisers' state is saved beside the checkpoint
(`vstain.train.resume_state`), never pickled.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from vstain.errors import VstainError
from vstain.models import SimpleTrainState, StainModel, choose_device, save_checkpoint
from vstain.models.checkpoint import load_weights
from vstain.models.device import autocast_context
from vstain.train.resume_state import load_state, save_state


class TrainingError(VstainError):
    """Training cannot go on (a loss became NaN or infinite)."""


class Callbacks(Protocol):
    """What the CLI progress bar and the napari widget receive; any method may be missing."""

    def on_step(self, step: int, losses: dict[str, float], seconds: float) -> None: ...
    def on_validation(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...


@dataclass
class TrainResult:
    steps: int
    losses: list[dict[str, float]] = field(default_factory=list)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoint: Path | None = None
    cancelled: bool = False


class _GuardedState(SimpleTrainState):
    """Refuses a non-finite loss before it can reach the weights."""

    def backward_step(self, name: str, loss: Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise TrainingError(
                f"The {name} loss became {loss.item()} at step {self.step + 1}; "
                "the weights were not updated. Lower the learning rate or check "
                "the data."
            )
        super().backward_step(name, loss)


def step_batch(data, step: int, batch_size: int, seed: int, device) -> dict[str, Tensor]:
    """The batch of ``step``: ``batch_size`` items drawn from ``data`` by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    items = [data[int(i)] for i in rng.integers(0, len(data), batch_size)]
    return {
        k: torch.stack([it[k] for it in items]).to(device)
        for k in items[0]
        if torch.is_tensor(items[0][k])
    }


def validate(model: StainModel, data, device, limit: int = 16) -> dict[str, float]:
    """Mean PSNR / SSIM of the model's IHC on up to ``limit`` validation items."""
    from vstain.metrics import psnr, ssim

    scores = {"psnr": [], "ssim": []}
    for i in range(min(len(data), limit)):
        item = data[i]
        pred = model.predict(item["he"][None].to(device)).ihc[0]
        fake = (pred.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        real = (item["ihc"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        scores["psnr"].append(psnr(fake, real))
        scores["ssim"].append(ssim(fake, real))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _call(callbacks, method: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(*args)


def _save(model: StainModel, path: Path, state: SimpleTrainState, metrics: dict) -> Path:
    model.card = dataclasses.replace(
        model.card, steps=state.step, metrics={**model.card.metrics, **metrics}
    )
    save_state(path, state.optimizers, state.step)
    return save_checkpoint(model, path)


def train(
    model: StainModel,
    data,
    *,
    steps: int,
    batch_size: int = 4,
    val_data=None,
    val_every: int = 0,
    checkpoint_path=None,
    checkpoint_every: int = 0,
    resume: bool = False,
    device: str = "auto",
    amp: bool = True,
    clip_norm: float | None = None,
    seed: int = 0,
    callbacks=(),
    cancel=None,
) -> TrainResult:
    """Train ``model`` for ``steps`` steps on ``data`` (items: dicts of "he", "ihc" tensors).

    Checkpoints (atomic) every ``checkpoint_every`` steps, at the end and on cancel; a NaN/inf loss
    raises `TrainingError` before any update, so the last checkpoint stays the last good one.
    ``resume`` continues from ``checkpoint_path`` (weights there, optimiser state beside it).
    """
    dev = choose_device(device)
    model.to(dev)
    path = Path(checkpoint_path) if checkpoint_path else None
    scaler = torch.amp.GradScaler(dev.type) if amp and dev.type == "cuda" else None
    state = _GuardedState(
        model.configure_optimizers(),
        steps,
        lr_factor=model.lr_factor,
        clip_norm=clip_norm,
        scaler=scaler,
    )
    if resume:
        if path is None or not path.exists():
            raise VstainError("--resume needs the checkpoint of the interrupted run.")
        load_weights(model, path)
        state.step = load_state(path, state.optimizers)
    result = TrainResult(steps=state.step, checkpoint=path if resume else None)
    metrics: dict[str, float] = {}
    while state.step < steps:
        if cancel is not None and cancel.cancelled:
            result.cancelled = True
            break
        torch.manual_seed(seed * 1_000_003 + state.step)
        batch = step_batch(data, state.step, batch_size, seed, dev)
        t0 = time.perf_counter()
        model.train()
        with autocast_context(dev):
            losses = model.training_step(batch, state)
        state.end_step()
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise TrainingError(f"Loss {bad[0]} is {losses[bad[0]]} at step {state.step}.")
        result.losses.append(losses)
        _call(callbacks, "on_step", state.step, losses, time.perf_counter() - t0)
        if val_data is not None and val_every and state.step % val_every == 0:
            metrics = validate(model, val_data, dev)
            result.validation.append((state.step, metrics))
            _call(callbacks, "on_validation", state.step, metrics)
        if path is not None and checkpoint_every and state.step % checkpoint_every == 0:
            result.checkpoint = _save(model, path, state, metrics)
            _call(callbacks, "on_checkpoint", path)
    if path is not None:
        result.checkpoint = _save(model, path, state, metrics)
        _call(callbacks, "on_checkpoint", path)
    result.steps = state.step
    return result
