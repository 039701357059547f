"""The rectified-flow path of a flow-matching teacher: x_s = (1 - s) x0 + s eps, s in [0, 1] (s = 1
is pure noise, included), the network predicting the velocity v = eps - x0 at timestep t = s T.

The per-sample coefficients are closed forms of t; the sampling grid is the teacher's own scheduler's
(``FlowMatchEulerDiscreteScheduler.set_timesteps``: its shift, its spacing), rebuilt from the config
the teacher saved, so dkdm-zoo's Euler steps are the teacher's own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class FlowSchedule:
    """Flow-matching coefficients at per-sample network timesteps t = s T (floats)."""

    process = "flow"

    def __init__(self, scheduler_config: Mapping[str, Any]):
        self.config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
        self.class_name = str(scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler"))
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        # the grid the teacher's own pipeline samples on: its scheduler's set_timesteps(N), or
        # FluxPipeline's sigmas np.linspace(1, 1/N, N) ("linspace"), recorded by the family
        self.sampling_grid = str(scheduler_config.get("_sampling_sigmas", "scheduler"))

    @classmethod
    def from_spec(cls, spec: Any) -> FlowSchedule:
        return cls({**spec.schedule, "num_train_timesteps": spec.num_train_timesteps})

    # -- the path ------------------------------------------------------------------------------------
    def s(self, t: Tensor, like: Tensor) -> Tensor:
        """The noise level s = t / T at per-sample timesteps, shaped to broadcast against ``like``."""
        values = t.to(device=like.device, dtype=torch.float64) / self.num_train_timesteps
        return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def alpha(self, t: Tensor, like: Tensor) -> Tensor:
        return 1.0 - self.s(t, like)

    def sigma(self, t: Tensor, like: Tensor) -> Tensor:
        return self.s(t, like)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        s = self.s(t, x0)
        return (1.0 - s) * x0 + s * noise

    def to_eps_x0(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, prediction_type: str
    ) -> tuple[Tensor, Tensor]:
        """(eps, x0) from a velocity output: x0 = x - s v, eps = x + (1 - s) v (no division: s = 1 is fine)."""
        if prediction_type != "flow":
            raise ValueError(f"a flow-matching path reads velocity outputs, not {prediction_type!r}")
        s = self.s(t, x_t)
        return x_t + (1.0 - s) * model_output, x_t - s * model_output

    # -- the EDM view: x / (1 - s) = x0 + sigma eps, sigma = s / (1 - s) -------------------------------
    def edm_sigma(self, t: Tensor, like: Tensor) -> Tensor:
        s = self.s(t, like)
        return s / (1.0 - s).clamp(min=1e-12)

    def timesteps_for_sigmas(self, sigmas: Tensor) -> Tensor:
        """The timesteps s T at which the path has EDM noise level ``sigmas`` (continuous: s = sigma / (1 + sigma))."""
        sigmas = sigmas.to(torch.float64)
        return (sigmas / (1.0 + sigmas) * self.num_train_timesteps).float()

    # -- the teacher's training chain: T levels, index k -> network timestep ---------------------------
    @functools.cached_property
    def chain_times(self) -> Tensor:
        """The timesteps s_k T of the teacher's training grid (its scheduler's, shift applied),
        ascending in k: index T-1 is pure noise (s = 1). A DPM-Solver flow scheduler (SANA) holds VP
        sigmas until its grid is set: its T-step flow grid is the chain."""
        scheduler = self.scheduler()
        if self.class_name == "DPMSolverMultistepScheduler":
            scheduler.set_timesteps(self.num_train_timesteps)
            return (scheduler.sigmas[:-1].to(torch.float64).flip(0) * self.num_train_timesteps).cpu()
        return (scheduler.sigmas.to(torch.float64).flip(0) * self.num_train_timesteps).cpu()

    def time_of(self, k: Tensor) -> Tensor:
        """The network timesteps of chain indices ``k`` (float32; index -1 is the clean end, s = 0)."""
        table = self.chain_times.to(k.device)
        k = k.long()
        return torch.where(
            k >= 0, table[k.clamp(min=0)], torch.zeros((), dtype=table.dtype, device=k.device)
        ).float()

    def jump(self, x_t: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor, x0: Tensor, **_: Any) -> Tensor:
        """The deterministic move from level t to t_prev along the prediction: (1 - s') x0 + s' eps, which
        is exactly the Euler step x + (s' - s) v of the flow ODE."""
        s_prev = self.s(t_prev, x_t)
        return (1.0 - s_prev) * x0 + s_prev * eps

    # -- the teacher's own sampling grid ---------------------------------------------------------------
    def scheduler(self) -> Any:
        """The teacher's diffusers scheduler, rebuilt from its saved config."""
        import diffusers

        return getattr(diffusers, self.class_name).from_config(self.config)

    def sampling_sigmas(self, steps: int) -> Tensor:
        """The noise levels of an N-step sampler, noisiest first, ending at 0 (float64)."""
        scheduler = self.scheduler()
        if self.sampling_grid == "linspace":
            import numpy as np

            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps))
        else:
            scheduler.set_timesteps(steps)
        return scheduler.sigmas.to(torch.float64).cpu()
