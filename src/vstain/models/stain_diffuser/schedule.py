"""Linear-beta DDPM forward process (the reverse process is in ``samplers.py``).

``beta_t`` is linear from ``beta_start`` to ``beta_end`` over ``T`` steps (t = 0 .. T - 1) and
``abar_t = prod_{s <= t} (1 - beta_s)``. The forward process is the closed form
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (StainDiffuser supplement Eq. 9).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LinearSchedule:
    """``T`` linear betas and their cumulative products (float64, on the CPU)."""

    def __init__(self, timesteps: int, beta_start: float, beta_end: float):
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.timesteps, self.beta_start, self.beta_end = timesteps, beta_start, beta_end
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alphas_bar = torch.cumprod(1 - self.betas, 0)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t`` for clean ``x0`` (B x C x H x W), steps ``t`` (B, long) and noise ``eps``."""
        abar = self.alphas_bar.to(x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ``abar_t / (1 - abar_t)`` at steps ``t`` (float64, CPU)."""
        abar = self.alphas_bar[t.cpu()]
        return abar / (1 - abar)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The noise that takes clean ``x0`` to ``x_t`` at steps ``t`` (inverse of q_sample)."""
        abar = self.alphas_bar.to(x_t.device)[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
