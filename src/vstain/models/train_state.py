"""A minimal :class:`~vstain.models.base.TrainState`: plain optimiser steps (tests, scripts)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from vstain.models.base import StainModel


class SimpleTrainState:
    """Steps named optimisers on request; the learning rate follows ``lr_factor(progress)``.

    Optional AMP ``scaler`` (``torch.amp.GradScaler``) and gradient-norm clipping. Call
    :meth:`end_step` after each ``training_step`` to advance ``progress`` and update the scaler.
    """

    def __init__(
        self,
        optimizers: dict[str, Optimizer],
        total_steps: int,
        *,
        lr_factor: Callable[[float], float] | None = None,
        clip_norm: float | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.optimizers = optimizers
        self.total_steps = total_steps
        self.lr_factor = lr_factor or (lambda progress: 1.0)
        self.clip_norm = clip_norm
        self.scaler = scaler
        self.step = 0
        for opt in optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])

    @classmethod
    def for_model(cls, model: StainModel, total_steps: int, **kwargs) -> SimpleTrainState:
        """A state with ``model``'s optimisers and learning-rate schedule."""
        return cls(model.configure_optimizers(), total_steps, lr_factor=model.lr_factor, **kwargs)

    @property
    def progress(self) -> float:
        return min(self.step / self.total_steps, 1.0)

    def backward_step(self, name: str, loss: Tensor) -> None:
        """Backpropagate ``loss`` into optimiser ``name``'s parameters and step it."""
        if name not in self.optimizers:
            raise KeyError(f"no optimiser {name!r}; the model configured {sorted(self.optimizers)}")
        opt = self.optimizers[name]
        factor = self.lr_factor(self.progress)
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
        opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.clip_norm is not None:
            if self.scaler:
                self.scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        if self.scaler:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def end_step(self) -> None:
        """Finish one training step: update the AMP scaler and advance ``progress``."""
        if self.scaler:
            self.scaler.update()
        self.step += 1
