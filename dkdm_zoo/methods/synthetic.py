"""The data-free baseline: sample a dataset with the teacher's full sampler, then train on it.

The generated set (in the teacher's diffusion space, with its conditions) is method state, so it
is checkpointed and never regenerated on resume; its cost is counted in ``teacher_forwards``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import STUDENT, Passes, Plan, SetupContext
from dkdm_zoo.methods.data import DenoisingOptions, DenoisingTraining
from dkdm_zoo.registry.options import PositiveInt
from dkdm_zoo.sampling.progress import progress_bar
from dkdm_zoo.teachers.base import Teacher


@dataclass(frozen=True)
class SyntheticOptions(DenoisingOptions):
    num_samples: PositiveInt = 1024  # the generated dataset's size
    sampler: Literal["ddim", "ddpm"] = "ddpm"
    sampler_steps: PositiveInt = 1000  # at most the teacher's T
    sample_batch: PositiveInt = 256


class Synthetic(DenoisingTraining):
    """Generate a dataset with the teacher's sampler, then train on it as on real data."""

    Options = SyntheticOptions
    options: SyntheticOptions

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        super().__init__(teacher, student, **options)
        T = teacher.spec.num_train_timesteps
        if self.options.sampler_steps > T:  # the one bound the teacher sets
            raise UserError(
                f"method.sampler_steps must be in 1..{T} for this teacher, got {self.options.sampler_steps}"
            )

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        spec = self.teacher.spec
        sample_bytes = 4 * spec.channels * spec.sample_shape[1] * spec.sample_shape[2]
        return Plan(
            init_forwards=self.options.num_samples * self.options.sampler_steps * self.teacher_cost(),
            state_bytes={"dataset": self.options.num_samples * sample_bytes},
            passes={STUDENT: Passes(1, 1)},
        )

    def setup(self, ctx: SetupContext) -> None:
        super().setup(ctx)
        if not ctx.resuming:
            self.generate()

    @torch.no_grad()
    def generate(self) -> None:
        chunks, refs = [], []
        with progress_bar(
            self.options.num_samples * self.options.sampler_steps,
            "teacher dataset",
            enabled=self.show_progress,
        ) as advance:
            for start in range(0, self.options.num_samples, self.options.sample_batch):
                n = min(self.options.sample_batch, self.options.num_samples - start)
                batch_refs = self.teacher.draw_refs(n, self.host_rng)
                noise = torch.randn(
                    (n, *self.teacher.spec.sample_shape),
                    generator=self.generator,
                    device=self.generator.device,
                )
                x = self.teacher.sample(
                    n,
                    steps=self.options.sampler_steps,
                    sampler=self.options.sampler,
                    cond=self.teacher.conditions_from_refs(batch_refs),
                    generator=self.generator,
                    noise=noise.to(self.teacher.device),
                    progress=lambda k, n=n: advance(k * n),
                )
                self.teacher_forwards += n * self.teacher_cost() * self.options.sampler_steps
                self.teacher_calls += self.options.sampler_steps
                chunks.append(x.float().to(self.device))
                if batch_refs is not None:
                    refs.append(batch_refs)
        self.samples = torch.cat(chunks)
        self.sample_refs = np.concatenate(refs) if refs else None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.samples is not None:
            state["samples"] = self.samples.cpu()
            if self.sample_refs is not None:
                state["sample_refs"] = torch.from_numpy(self.sample_refs)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "samples" in state:
            self.samples = state["samples"].to(self.device)
            self.sample_refs = state["sample_refs"].numpy() if "sample_refs" in state else None
