"""One training loop for every model: steps, validation, EMA, checkpoints, resume and cancel.

Determinism: the items of step ``s`` and torch's random state during it are functions of
``(seed, s)`` only (`StepBatches`; torch is reseeded per step inside ``fork_rng``, so the caller's
random state is untouched), so a run resumed from a checkpoint continues exactly as an uninterrupted
run with the same seed would. The optimisers', AMP scaler's and EMA's state are saved beside the
checkpoint (`vstain.train.resume_state`), never pickled.

EMA: with ``ema=decay`` an exponential moving average of the parameters (buffers such as batch-norm
statistics are copied from the trained model) is what gets validated and saved in the checkpoint;
the raw training weights go to the state file, for resuming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler

from vstain.errors import CheckpointError, VstainError
from vstain.models import SimpleTrainState, StainModel, choose_device, save_checkpoint
from vstain.models.checkpoint import load_weights, read_card
from vstain.models.device import autocast_dtype
from vstain.train.evaluate import evaluate
from vstain.train.resume_state import RunState, load_state, save_state


class TrainingError(VstainError):
    """Training cannot go on (a loss or the weights became NaN or infinite)."""


class TrainCallback(Protocol):
    """What the CLI and the napari widget receive. A callback may define only some methods."""

    def on_step(self, step: int, losses: dict[str, float], seconds: float) -> None: ...
    def on_validation(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...


@dataclass
class TrainResult:
    """What a call to `train` did: steps reached, losses per step, validations, last checkpoint."""

    steps: int
    losses: list[dict[str, float]] = field(default_factory=list)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoint: Path | None = None
    cancelled: bool = False


class StepBatches(Sampler[list[tuple[int, int]]]):
    """The (epoch, index) items of each step from ``start`` to ``stop`` - 1.

    Step ``s`` takes positions ``s * batch_size`` ... of an endless sequence of epochs, epoch ``e``
    being the permutation of the ``n`` items drawn from ``numpy.random.default_rng([seed, e])``.
    Nothing depends on iterator state, so a run resumed at step ``s`` sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need items and a batch size >= 1, got {n} and {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The (epoch, index) pairs of step ``step``."""
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = {p // self.n for p in positions}
        perms = {e: self._permutation(e) for e in epochs}
        return [(p // self.n, int(perms[p // self.n][p % self.n])) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (self.batch(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class _EpochItems(Dataset):
    """``data`` indexed by (epoch, index); calls ``data.set_epoch`` first where it exists."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
        return self.data[index]


class _GuardedState(SimpleTrainState):
    """Refuses a non-finite loss before it can reach the weights."""

    def backward_step(self, name: str, loss: Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise TrainingError(
                f"The {name} loss became {loss.item()} at step {self.step + 1}; the weights were "
                "not updated with it. Lower the learning rate, use clip_norm, or check the data."
            )
        super().backward_step(name, loss)


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


@contextlib.contextmanager
def _step_rng(device: torch.device, seed: int, step: int) -> Iterator[None]:
    """Torch's random state seeded from (seed, step); the caller's state is restored afterwards."""
    accelerator = device.type != "cpu"
    with torch.random.fork_rng(
        devices=[device.index or 0] if accelerator else [],
        device_type=device.type if accelerator else None,
    ):
        torch.manual_seed(_step_seed(seed, step))
        yield


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA when ``amp`` (bf16 where supported, else fp16); else nothing."""
    dtype = autocast_dtype(device) if amp else None
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


def _call(callbacks: Sequence, method: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(*args)


def _check_losses(losses: dict[str, float], step: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(
            f"The {bad[0]} loss is {losses[bad[0]]} at step {step}. Lower the learning rate, use "
            "clip_norm, or check the data; the last checkpoint is the last good one."
        )


def _check_weights(model: StainModel, step: int) -> None:
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise TrainingError(
            f"Weights {', '.join(bad[:3])} are not finite at step {step}; they were not saved, so "
            "the last checkpoint is the last good one. Lower the learning rate or use clip_norm."
        )


class _Checkpointer:
    """Saves the weights to validate and keep (the EMA's, if any) and the state to resume from."""

    def __init__(self, path, model, state, averaged, ema, seed, callbacks):
        self.path, self.model, self.state = path, model, state
        self.averaged, self.ema, self.seed, self.callbacks = averaged, ema, seed, callbacks
        self.saved_step: int | None = None

    @property
    def inference_model(self) -> StainModel:
        return self.averaged.module if self.averaged is not None else self.model

    def run_state(self) -> RunState:
        scaler = self.state.scaler.state_dict() if self.state.scaler else None
        updates = int(self.averaged.n_averaged.item()) if self.averaged is not None else 0
        return RunState(self.state.step, self.seed, scaler, self.ema, updates)

    def save(self, metrics: dict[str, float]) -> None:
        """Write the training state, then the checkpoint (each atomic); never non-finite weights."""
        step, target = self.state.step, self.inference_model
        _check_weights(self.model, step)
        _check_weights(target, step)
        self.model.card = dataclasses.replace(
            self.model.card, steps=step, metrics={**self.model.card.metrics, **metrics}
        )
        target.card = self.model.card
        raw = self.model.state_dict() if self.averaged is not None else None
        save_state(self.path, self.run_state(), self.state.optimizers, raw)
        save_checkpoint(target, self.path)
        self.saved_step = step
        _call(self.callbacks, "on_checkpoint", self.path)

    def resume(self, steps: int) -> None:
        """Continue from ``path``: weights, optimisers, scaler and EMA as they were saved."""
        if not self.path.is_file():
            raise CheckpointError(
                f"Cannot resume: {self.path} does not exist. Give the checkpoint of the run to "
                "continue, or start a new run."
            )
        run, raw = load_state(self.path, self.state.optimizers)
        card = read_card(self.path)
        problems = []
        if card.steps != run.step:
            problems.append(
                f"the checkpoint is at step {card.steps} but its training state at {run.step} "
                "(interrupted while saving?); start a new run"
            )
        if run.seed != self.seed:
            problems.append(f"it was trained with seed {run.seed}: resume with seed={run.seed}")
        if run.ema_decay != self.ema:
            problems.append(f"it was trained with ema={run.ema_decay}: resume with that")
        if run.step > steps:
            problems.append(f"it has done {run.step} steps already: ask for at least that many")
        if problems:
            raise CheckpointError(f"Cannot resume from {self.path.name}: " + "; ".join(problems))
        if self.averaged is not None:
            load_weights(self.averaged.module, self.path)
            self.model.load_state_dict(raw, strict=True)
            self.averaged.n_averaged.fill_(run.ema_updates)
        else:
            load_weights(self.model, self.path)
        if self.state.scaler is not None and run.scaler is not None:
            self.state.scaler.load_state_dict(run.scaler)
        self.state.step = self.saved_step = run.step
        self.model.card = dataclasses.replace(
            self.model.card, metrics={**card.metrics, **self.model.card.metrics}
        )


def _check_arguments(steps, batch_size, val_every, checkpoint_every, ema, resume, path) -> None:
    problems = []
    if steps < 1 or batch_size < 1:
        problems.append(f"steps and batch_size must be >= 1 (got {steps}, {batch_size})")
    if val_every < 0 or checkpoint_every < 0:
        problems.append("val_every and checkpoint_every must be >= 0 (0: only at the end)")
    if ema is not None and not 0 < ema < 1:
        problems.append(f"ema must be a decay between 0 and 1, such as 0.999 (got {ema})")
    if resume and path is None:
        problems.append("resume needs the checkpoint_path of the run to continue")
    if problems:
        raise VstainError("Cannot train: " + "; ".join(problems) + ".")


def train(
    model: StainModel,
    train_data,
    *,
    steps: int,
    batch_size: int,
    val_data=None,
    val_every: int = 0,
    val_limit: int | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    device: str = "auto",
    amp: bool = True,
    ema: float | None = None,
    clip_norm: float | None = None,
    seed: int = 0,
    num_workers: int = 0,
    training_data: str | None = None,
    callbacks: Sequence[TrainCallback] = (),
    cancel=None,
) -> TrainResult:
    """Train ``model`` until it has done ``steps`` steps on ``train_data``.

    Parameters
    ----------
    train_data, val_data
        Datasets of dicts with "he" and "ihc" (3 x H x W float in [0, 1], one size per dataset).
        ``set_epoch(epoch)`` is called on them where it exists (see `StepBatches`).
    val_every, val_limit
        Validate (`vstain.train.evaluate` without learned metrics, on the first ``val_limit``
        items) every ``val_every`` steps, and at the end; 0: only at the end.
    checkpoint_path, checkpoint_every
        Save (atomically) every ``checkpoint_every`` steps (0: only at the end), at the end and on
        cancel. The card gets ``steps``, the last validation ``metrics`` and ``training_data``.
    resume
        Continue the run saved at ``checkpoint_path`` (same seed and ema); the result equals an
        uninterrupted run's.
    amp
        Mixed precision on CUDA (bf16, or fp16 with a gradient scaler); ignored elsewhere.
    ema
        Decay of an exponential moving average of the weights, validated and saved instead of the
        raw weights (e.g. 0.999); None: no EMA.
    clip_norm
        Clip each optimiser's gradient norm to this.
    training_data
        Description for the card; default: the card's, else the dataset's type and size.
    callbacks
        Objects with any of ``on_step(step, losses, seconds)``, ``on_validation(step, metrics)``,
        ``on_checkpoint(path)``.
    cancel
        A `vstain.tiles.CancelToken`, checked before every step; a cancelled run saves and returns
        with ``cancelled=True``.

    Raises
    ------
    TrainingError
        A loss or weight became NaN or infinite; the last checkpoint is kept as it was.
    """
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    _check_arguments(steps, batch_size, val_every, checkpoint_every, ema, resume, path)
    dev = choose_device(device)
    model.to(dev)
    dtype = autocast_dtype(dev) if amp else None
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    state = _GuardedState.for_model(model, steps, clip_norm=clip_norm, scaler=scaler)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema)) if ema else None
    saver = _Checkpointer(path, model, state, averaged, ema, seed, callbacks)
    if resume:
        saver.resume(steps)
    description = training_data or model.card.training_data
    model.card = dataclasses.replace(
        model.card,
        training_data=description or f"{type(train_data).__name__} ({len(train_data)} items)",
    )
    loader = DataLoader(
        _EpochItems(train_data),
        batch_sampler=StepBatches(len(train_data), batch_size, seed, state.step, steps),
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # worker seeds; leaves torch's RNG alone
    )
    result = TrainResult(steps=state.step)
    metrics: dict[str, float] = {}
    batches = iter(loader)
    while state.step < steps:
        if cancel is not None and cancel.cancelled:
            result.cancelled = True
            break
        t0 = time.perf_counter()
        batch = _to_device(next(batches), dev)
        model.train()
        with _step_rng(dev, seed, state.step), _autocast(dev, amp):
            losses = model.training_step(batch, state)
        state.end_step()
        _check_losses(losses, state.step)
        if averaged is not None:
            averaged.update_parameters(model)
        result.losses.append(losses)
        _call(callbacks, "on_step", state.step, losses, time.perf_counter() - t0)
        if val_data is not None and (
            state.step == steps or (val_every and state.step % val_every == 0)
        ):
            metrics = evaluate(
                saver.inference_model,
                val_data,
                device=dev,
                batch_size=batch_size,
                limit=val_limit,
                learned=False,
            )
            metrics["validation_step"] = state.step
            result.validation.append((state.step, metrics))
            _call(callbacks, "on_validation", state.step, metrics)
        if path is not None and checkpoint_every and state.step % checkpoint_every == 0:
            saver.save(metrics)
    if path is not None and saver.saved_step != state.step:
        saver.save(metrics)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    result.steps = state.step
    result.checkpoint = path if saver.saved_step is not None else None
    return result
