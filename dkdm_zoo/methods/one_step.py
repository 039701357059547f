"""What the one-step methods (BOOT, SiD, Diff-Instruct) share: a OneStepGenerator student and
sampling with exactly one network call per image."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dkdm_zoo.methods.base import Method
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.teachers.base import Condition


class OneStepMethod(Method):
    """A method whose student is a ``OneStepGenerator`` (sampled in one evaluation)."""

    one_step = True
    student: OneStepGenerator

    def noise(self, n: int) -> Tensor:
        """Standard normal noise in the teacher's sample space, from the method's generator."""
        device = self.generator.device if self.generator is not None else self.device
        shape = (n, *self.teacher.spec.sample_shape)
        return torch.randn(shape, generator=self.generator, device=device).to(self.device)

    def conditions(self, n: int) -> Condition | None:
        """Random conditions for a batch (None for an unconditional teacher), on the method's device."""
        cond = self.draw_conditions(n)
        return cond.to(self.device) if cond is not None else None

    @torch.no_grad()
    def sample(
        self,
        student: nn.Module,
        n: int,
        *,
        cond: Condition | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
        **_: Any,
    ) -> Tensor:
        """Exactly one network evaluation per image: ``student.generate(z, c)``."""
        assert isinstance(student, OneStepGenerator)
        device = next(student.parameters()).device
        if cond is None and self.teacher.spec.conditioning != "none":
            cond = self.teacher.sample_conditions(n, generator)
        kwargs = cond.to(device).model_kwargs() if cond is not None else {}
        noise = torch.randn((n, *self.teacher.spec.sample_shape), generator=generator).to(device)
        x0 = student.generate(noise, **kwargs).float()
        return self.teacher.decode(x0) if decode else x0
