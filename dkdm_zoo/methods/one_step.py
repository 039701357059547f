"""What the one-step methods (BOOT, SiD, Diff-Instruct) share: a OneStepGenerator student (sampled,
like every student, by ``Method.sample``: one network call per image), noise and conditions."""

from __future__ import annotations

import torch
from torch import Tensor

from dkdm_zoo.methods.base import Method
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.teachers.base import Condition


class OneStepMethod(Method):
    """A method whose student is a ``OneStepGenerator`` (sampled in one evaluation)."""

    student: OneStepGenerator
    #: the student when a command names none: the teacher's own network (``--student teacher``)
    default_student = "teacher"

    def noise(self, n: int) -> Tensor:
        """Standard normal noise in the teacher's sample space, from the method's generator."""
        device = self.generator.device if self.generator is not None else self.device
        shape = (n, *self.teacher.spec.sample_shape)
        return torch.randn(shape, generator=self.generator, device=device).to(self.device)

    def conditions(self, n: int) -> Condition | None:
        """Random conditions for a batch (None for an unconditional teacher), on the method's device."""
        cond = self.draw_conditions(n)
        return cond.to(self.device) if cond is not None else None
