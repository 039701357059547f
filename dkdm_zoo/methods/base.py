"""The Method interface.

A method owns the algorithm and its state (the DKDM pool, BOOT's step choices); it knows nothing
about devices beyond the one it is handed, precision or processes. The engine calls:

    method.setup(device, generator)          # once, before training (skipped work on resume)
    loss, logs = method.loss(student, step)  # every micro-step; student may be DDP-wrapped
    method.state_dict() / load_state_dict()  # checkpointed with the run

and ``method.sample(student, n, ...)`` to draw preview / evaluation images from the student.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dkdm_zoo.diffusion.sampling import sample_loop
from dkdm_zoo.teachers.base import Condition, Teacher


def student_eps(
    student: nn.Module, x: Tensor, t: Tensor, cond: Condition | None, channels: int
) -> tuple[Tensor, Tensor | None]:
    """Split a student output into eps and the learned-variance values (None for fixed variance)."""
    out = student(x, t, **(cond.model_kwargs() if cond is not None else {}))
    eps = out[:, :channels]
    var_values = out[:, channels : 2 * channels] if out.shape[1] > channels else None
    return eps, var_values


class Method(ABC):
    """A distillation algorithm: teacher + student -> one loss per step."""

    #: Methods that produce a one-step generator set this (sampling then uses one evaluation).
    one_step: bool = False
    #: Set by the engine before ``setup``: the per-process batch and whether this process shows progress.
    batch_size: int = 1
    show_progress: bool = False

    @classmethod
    def prepare_student(cls, student: nn.Module, teacher: Teacher, **options: Any) -> nn.Module:
        """Adapt the freshly built student before the optimiser exists (default: unchanged)."""
        return student

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        self.teacher = teacher
        self.student = student
        self.options = options
        self.teacher_forwards = 0  # teacher network evaluations so far (CFG counts twice)
        self.device = torch.device("cpu")
        self.generator: torch.Generator | None = None

    def setup(self, device: torch.device, generator: torch.Generator, *, resuming: bool = False) -> None:
        """Prepare state on ``device``; when ``resuming``, state comes from ``load_state_dict`` instead."""
        self.device = device
        self.generator = generator

    @abstractmethod
    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, dict[str, float]]:
        """The student's loss for one micro-batch (fp32 scalar) and scalars to log."""

    def state_dict(self) -> dict[str, Any]:
        return {"teacher_forwards": self.teacher_forwards}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_forwards = int(state.get("teacher_forwards", 0))

    @torch.no_grad()
    def sample(
        self,
        student: nn.Module,
        n: int,
        *,
        steps: int = 50,
        sampler: str = "ddim",
        cond: Condition | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Images from the student (an eps-model on the teacher's schedule), decoded to [-1, 1];
        ``progress(1)`` after every sampler step."""
        spec = self.teacher.spec
        device = next(student.parameters()).device
        if cond is None and spec.conditioning != "none":
            cond = self.teacher.sample_conditions(n, generator)
        cond = cond.to(device) if cond is not None else None
        noise = torch.randn((n, *spec.sample_shape), generator=generator).to(device)

        def eps_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
            eps, var = student_eps(student, x, t, cond, spec.channels)
            return eps.float(), None if var is None else var.float()

        samples = sample_loop(
            eps_fn,
            self.teacher.schedule,
            noise,
            steps=steps,
            sampler=sampler,
            variance_type=spec.variance_type,
            clip_sample=spec.clip_sample,
            clip_sample_range=spec.clip_sample_range,
            generator=None,
            progress=progress,
        )
        return self.teacher.decode(samples) if decode else samples
