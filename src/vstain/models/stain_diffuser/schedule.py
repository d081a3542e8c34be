"""Linear-beta DDPM forward process and one reverse step covering DDPM (eta 1) and DDIM (eta 0).

``beta_t`` is linear from ``beta_start`` to ``beta_end`` over ``T`` steps (t = 0 .. T - 1) and
``abar_t = prod_{s <= t} (1 - beta_s)``. The forward process is the closed form
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (StainDiffuser supplement Eq. 9). The reverse
step is DDIM's generalised update between any two steps ``t > t'``: with ``eta = 1`` and
``t' = t - 1`` it is the paper's ancestral DDPM step (posterior mean and variance, Eqs. 5-7).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SAMPLERS = {"ddpm": 1.0, "ddim": 0.0}


class LinearSchedule:
    """``T`` linear betas and their cumulative products (float64, on the CPU)."""

    def __init__(self, timesteps: int, beta_start: float, beta_end: float):
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.timesteps = timesteps
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alphas_bar = torch.cumprod(1 - self.betas, 0)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t`` for clean ``x0`` (B x C x H x W), steps ``t`` (B, long) and noise ``eps``."""
        abar = self.alphas_bar.to(x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The noise that takes clean ``x0`` to ``x_t`` at steps ``t`` (inverse of q_sample)."""
        abar = self.alphas_bar.to(x_t.device)[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def sampling_steps(self, steps: int) -> list[int]:
        """``steps`` evenly spaced steps from ``T - 1`` down ("trailing" spacing); all for T."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be between 1 and {self.timesteps}, got {steps}")
        ratio = self.timesteps / steps
        return [round(k * ratio) - 1 for k in range(steps, 0, -1)]

    def abar(self, t: int) -> float:
        """``abar_t``, with ``abar_{-1} = 1`` (the clean image)."""
        return 1.0 if t < 0 else float(self.alphas_bar[t])

    def step(
        self, x: Tensor, eps: Tensor, t: int, t_prev: int, eta: float, noise: Tensor
    ) -> Tensor:
        """``x_{t'}`` from ``x_t`` and the predicted noise ``eps`` (x0 estimate clipped to [-1, 1]).

        ``sigma = eta sqrt((1 - abar') / (1 - abar) (1 - abar / abar'))``; ``noise`` is used only
        when sigma > 0 (never on the last step, ``t' = -1``).
        """
        ab, ab_prev = self.abar(t), self.abar(t_prev)
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        direction = math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        out = math.sqrt(ab_prev) * x0 + direction
        return out + sigma * noise if sigma > 0 else out
