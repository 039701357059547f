"""The data-free baseline: sample a dataset with the teacher's full sampler, then train on it.

The generated set (in the teacher's diffusion space, with its conditions) is method state, so it
is checkpointed and never regenerated on resume; its cost is counted in ``teacher_forwards``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dkdm_zoo.diffusion.chain import SAMPLERS
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import STUDENT, Passes, Plan, SetupContext
from dkdm_zoo.methods.data import DenoisingTraining, progress_bar
from dkdm_zoo.teachers.base import Teacher


class Synthetic(DenoisingTraining):
    def __init__(
        self,
        teacher: Teacher,
        student: nn.Module,
        *,
        num_samples: int = 1024,
        sampler: Literal["ddim", "ddpm"] = "ddpm",
        sampler_steps: int = 1000,
        sample_batch: int = 256,
        cond_drop_prob: float = 0.0,
        vlb: bool = True,
    ):
        if sampler not in SAMPLERS:
            raise UserError(f"method.sampler={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if num_samples < 1 or sample_batch < 1:
            raise UserError("method.num_samples and method.sample_batch must be positive")
        if not 1 <= sampler_steps <= teacher.spec.num_train_timesteps:
            raise UserError(
                f"method.sampler_steps must be in 1..{teacher.spec.num_train_timesteps}, got {sampler_steps}"
            )
        super().__init__(teacher, student, cond_drop_prob=cond_drop_prob, vlb=vlb)
        self.num_samples, self.sampler, self.sampler_steps, self.sample_batch = (
            num_samples,
            sampler,
            sampler_steps,
            sample_batch,
        )

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        spec = self.teacher.spec
        sample_bytes = 4 * spec.channels * spec.sample_shape[1] * spec.sample_shape[2]
        return Plan(
            init_forwards=self.num_samples * self.sampler_steps * self.teacher_cost(),
            state_bytes={"dataset": self.num_samples * sample_bytes},
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
            self.num_samples * self.sampler_steps, "teacher dataset", enabled=self.show_progress
        ) as advance:
            for start in range(0, self.num_samples, self.sample_batch):
                n = min(self.sample_batch, self.num_samples - start)
                batch_refs = self.teacher.draw_refs(n, self.host_rng)
                noise = torch.randn(
                    (n, *self.teacher.spec.sample_shape),
                    generator=self.generator,
                    device=self.generator.device,
                )
                x = self.teacher.sample(
                    n,
                    steps=self.sampler_steps,
                    sampler=self.sampler,
                    cond=self.teacher.conditions_from_refs(batch_refs),
                    generator=self.generator,
                    noise=noise.to(self.teacher.device),
                    progress=lambda k, n=n: advance(k * n),
                )
                self.teacher_forwards += n * self.teacher_cost() * self.sampler_steps
                self.teacher_calls += self.sampler_steps
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
