"""The rectified-flow path of a flow-matching teacher: x_s = (1 - s) x0 + s eps, s in [0, 1] (s = 1
is pure noise, included), the network predicting the velocity v = eps - x0 at timestep t = s T.

The per-sample coefficients are closed forms of t; the sampling grid is the teacher's own scheduler's
(``FlowMatchEulerDiscreteScheduler.set_timesteps``: its shift, its spacing), rebuilt from the config
the teacher saved, so dkdm-zoo's Euler steps are the teacher's own.
"""

from __future__ import annotations

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

    def velocity(self, x0: Tensor, noise: Tensor) -> Tensor:
        return noise - x0

    def to_eps_x0(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, prediction_type: str
    ) -> tuple[Tensor, Tensor]:
        """(eps, x0) from a velocity output: x0 = x - s v, eps = x + (1 - s) v (no division: s = 1 is fine)."""
        if prediction_type != "flow":
            raise ValueError(f"a flow-matching path reads velocity outputs, not {prediction_type!r}")
        s = self.s(t, x_t)
        return x_t + (1.0 - s) * model_output, x_t - s * model_output

    # -- the teacher's own sampling grid ---------------------------------------------------------------
    def scheduler(self) -> Any:
        """The teacher's diffusers scheduler, rebuilt from its saved config."""
        import diffusers

        return getattr(diffusers, self.class_name).from_config(self.config)

    def sampling_sigmas(self, steps: int) -> Tensor:
        """The noise levels of an N-step sampler, noisiest first, ending at 0 (float64)."""
        scheduler = self.scheduler()
        scheduler.set_timesteps(steps)
        return scheduler.sigmas.to(torch.float64).cpu()
