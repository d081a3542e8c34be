"""Reverse-process samplers: diffusers' schedulers set up for a :class:`LinearSchedule`.

- ``"ddpm"``: the paper's ancestral sampler (Eqs. 5-7), diffusers' DDIM update with eta = 1; with
  every step it is exactly DDPM's posterior mean and variance, with fewer steps the strided form.
- ``"ddim"``: DDIM, eta = 0 (deterministic).
- ``"dpm-solver++"``: DPM-Solver++ (2M), multistep, deterministic.

All use "trailing" step spacing (the first step is ``T - 1``) and clip the DDIM x0 estimate to
[-1, 1]; step counts that divide ``T`` give evenly spaced steps. The ancestral sampler takes its
noise from the caller (position-seeded noise, see ``noise.py``), never from a global generator.
"""

from __future__ import annotations

from torch import Tensor

from vstain.models.stain_diffuser.schedule import LinearSchedule

SAMPLERS = ("ddim", "ddpm", "dpm-solver++")


class Sampler:
    """One sampling run of ``steps`` steps: :attr:`timesteps` and :meth:`step` for each."""

    def __init__(self, schedule: LinearSchedule, name: str, steps: int):
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        if name not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")
        common = {
            "num_train_timesteps": schedule.timesteps,
            "beta_start": schedule.beta_start,
            "beta_end": schedule.beta_end,
            "beta_schedule": "linear",
            "timestep_spacing": "trailing",
        }
        if name == "dpm-solver++":
            self._scheduler = DPMSolverMultistepScheduler(
                **common, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
            )
            self._options = {}
        else:
            self._scheduler = DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True)
            self._options = {
                "eta": 1.0 if name == "ddpm" else 0.0,
                "use_clipped_model_output": True,
            }
        self._scheduler.set_timesteps(steps)
        #: Whether :meth:`step` needs fresh noise.
        self.stochastic = name == "ddpm"

    @property
    def timesteps(self) -> list[int]:
        """The steps ``t`` at which the network is evaluated, from noisiest to cleanest."""
        return [int(t) for t in self._scheduler.timesteps]

    def step(self, x: Tensor, eps: Tensor, t: int, noise: Tensor | None = None) -> Tensor:
        """The next, less noisy sample from ``x`` at step ``t`` and the predicted noise ``eps``."""
        out = self._scheduler.step(eps, t, x, variance_noise=noise, **self._options)
        return out.prev_sample.to(x.dtype)
