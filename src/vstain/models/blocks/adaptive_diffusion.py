"""Diffusion-GAN's forward diffusion of discriminator inputs with an adaptive number of steps T.

Real and fake images are corrupted as ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) sigma eps`` with
``beta`` linear from ``beta_start`` to ``beta_end`` over the current T steps, and ``t`` drawn from
{1..T} with P(t) proportional to t (Diffusion-GAN's "priority" distribution, biased to later steps).
T follows the discriminator's overfitting: every ``interval`` observed batches the mean of
``sign(D(real) - 0.5)`` (least-squares D, targets 0 / 1) is compared with ``target``; ``p`` moves by
``sign(r_d - target) x images / (kimg x 1000)`` within [0, 1] and ``T = t_min + round(p (t_max -
t_min))``. All of that state is in buffers, so a checkpoint carries it and a resumed run continues.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdaptiveDiffusion(nn.Module):
    """Forward-diffuses discriminator inputs; T adapts to the discriminator's overfitting."""

    def __init__(
        self,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        noise_std: float = 0.05,
        t_min: int = 10,
        t_max: int = 1000,
        target: float = 0.6,
        interval: int = 4,
        kimg: float = 100.0,
    ):
        super().__init__()
        if not 1 <= t_min <= t_max:
            raise ValueError(f"need 1 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if interval < 1 or kimg <= 0:
            raise ValueError(f"need interval >= 1 and kimg > 0, got {interval}, {kimg}")
        self.beta_start, self.beta_end, self.noise_std = beta_start, beta_end, noise_std
        self.t_min, self.t_max = t_min, t_max
        self.target, self.interval, self.kimg = target, interval, kimg
        self.register_buffer("p", torch.zeros(1))
        self.register_buffer("T", torch.full((1,), t_min, dtype=torch.long))
        self.register_buffer("sign_sum", torch.zeros(1))
        self.register_buffer("observed", torch.zeros(1, dtype=torch.long))
        self.register_buffer("images", torch.zeros(1, dtype=torch.long))

    @property
    def steps(self) -> int:
        """The current number of diffusion steps T."""
        return int(self.T.item())

    def alphas_bar(self, device: torch.device | None = None) -> Tensor:
        """abar_0 = 1, abar_1 .. abar_T for the current T (float32)."""
        betas = torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)
        cumprod = torch.cumprod(1 - betas, 0)
        return torch.cat([torch.ones(1, dtype=torch.float64), cumprod]).float().to(device)

    def sample_t(self, batch: int, device: torch.device | None = None) -> Tensor:
        """``batch`` steps from {1..T}, P(t) proportional to t."""
        weights = torch.arange(1, self.steps + 1, dtype=torch.float32, device=device)
        return torch.multinomial(weights, batch, replacement=True) + 1

    def forward(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, t)``: ``x0`` diffused to a step ``t`` (one per sample) drawn for this call."""
        t = self.sample_t(x0.shape[0], x0.device)
        abar = self.alphas_bar(x0.device)[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0) * self.noise_std
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise, t

    @torch.no_grad()
    def observe(self, d_real: Tensor) -> None:
        """Record D's outputs on diffused real images; every ``interval`` calls, adapt T."""
        self.sign_sum += torch.sign(d_real.float() - 0.5).mean()
        self.observed += 1
        self.images += d_real.shape[0]
        if self.observed.item() % self.interval:
            return
        r_d = self.sign_sum / self.interval
        step = self.images.float() / (self.kimg * 1000)
        self.p.copy_((self.p + torch.sign(r_d - self.target) * step).clamp(0, 1))
        self.T.fill_(self.t_min + round(self.p.item() * (self.t_max - self.t_min)))
        self.sign_sum.zero_()
        self.images.zero_()
