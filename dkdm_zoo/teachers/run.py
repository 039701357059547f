"""`run`: a finished dkdm-zoo run directory (its trained student) as a teacher, for chained distillation.

The run folder is read through ``dkdm_zoo.runs`` (its layout and run.json are documented there).
A student predicts eps (plus variance channels where the original teacher learned them) on the
original teacher's schedule: ``student(x, t, class_labels=None, encoder_hidden_states=None)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.runs import Run
from dkdm_zoo.runs.student import load_student, original_teacher
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import takes_condition_extras
from dkdm_zoo.teachers.as_student import bind_run_student
from dkdm_zoo.teachers.base import Condition, PipelineComponents, Teacher
from dkdm_zoo.teachers.loading import TeacherOptions, parse_dtype


class RunTeacher(Teacher):
    """A trained student as a teacher: eps-prediction on the original teacher's schedule."""

    def __init__(
        self,
        student: nn.Module,
        spec: TeacherSpec,
        original: Callable[[], Teacher],
        *,
        guidance_scale: float | None = None,
    ):
        super().__init__(spec, guidance_scale=guidance_scale)
        self.student = student
        self._build_original = original
        self._original: Teacher | None = None
        self.to("cpu")

    @property
    def original(self) -> Teacher:
        """The run's original teacher, built on first use (decoding latents, encoding text)."""
        if self._original is None:
            self._original = self._build_original()
            self._original.to(self.device, self.dtype)
        return self._original

    def modules(self) -> list[nn.Module]:
        return [self.student]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RunTeacher:
        super().to(device, dtype)
        if self._original is not None:
            self._original.to(device, dtype)
        return self

    def denoiser(self) -> nn.Module:
        return self.student

    def with_denoiser(self, module: nn.Module) -> RunTeacher:
        return self._view(student=module)

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        kwargs = (
            cond.to(x_t.device).model_kwargs(extras=takes_condition_extras(self.student))
            if cond is not None
            else {}
        )
        if "encoder_hidden_states" in kwargs:
            kwargs["encoder_hidden_states"] = kwargs["encoder_hidden_states"].to(self.dtype)
        return self.student(x_t, t.to(x_t.device), **kwargs)

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> Condition | None:
        if self.spec.conditioning == "text":
            return self.original.sample_conditions(n, generator)
        return super().sample_conditions(n, generator)

    def null_condition(self, n: int) -> Condition | None:
        if self.spec.conditioning == "text":
            return self.original.null_condition(n)
        return super().null_condition(n)

    def draw_refs(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        if self.spec.conditioning == "text":
            return self.original.draw_refs(n, rng)
        return super().draw_refs(n, rng)

    def null_ref(self) -> int:
        return self.original.null_ref() if self.spec.conditioning == "text" else super().null_ref()

    def conditions_from_refs(self, refs: np.ndarray | None) -> Condition | None:
        if self.spec.conditioning == "text":
            return self.original.conditions_from_refs(refs)
        return super().conditions_from_refs(refs)

    def encode_prompts(self, prompts: list[str]) -> Condition:
        if self.spec.conditioning == "text":
            return self.original.encode_prompts(prompts)
        return super().encode_prompts(prompts)

    def decode(self, samples: Tensor) -> Tensor:
        return self.original.decode(samples) if self.spec.space == "latent" else samples

    def pipeline_components(self) -> PipelineComponents:
        if self.spec.space == "latent" or self.spec.conditioning == "text":
            return self.original.pipeline_components()
        return PipelineComponents()


def from_run(
    run: Run, registry: Any, *, guidance_scale: float | None = None, dtype: str | torch.dtype = "float32"
) -> RunTeacher:
    """The final student of ``run`` as a diffusion teacher; its original teacher comes from ``registry``."""
    if run.manifest.one_step:
        raise UserError(
            f"{run.path} holds a one-step generator (BOOT): it is not a diffusion model and cannot be a teacher"
        )
    student = load_student(run, registry, dtype=parse_dtype(dtype))
    original = run.manifest.teacher_spec  # the student predicts eps, or a flow teacher's velocity
    spec = dataclasses.replace(original, prediction_type=original.student_prediction, family="run")
    built: list[Teacher] = []

    def build_original() -> Teacher:  # one original teacher, shared by the binding and the RunTeacher
        if not built:
            built.append(original_teacher(run, registry))
        return built[0]

    # bound BEFORE the RunTeacher moves the student: a LoRA student's base is its original teacher's
    # network (nothing until attached), a custom-call family's network calls its teacher's code
    bind_run_student(student, build_original)
    teacher = RunTeacher(student, spec, build_original, guidance_scale=guidance_scale)
    return teacher.to("cpu", parse_dtype(dtype))


@dataclass(frozen=True)
class RunTeacherOptions(TeacherOptions):
    path: str | os.PathLike[str] | None = None  # the run directory


@takes_options(RunTeacherOptions)
def load(options: RunTeacherOptions, *, registry: Any) -> RunTeacher:
    """The final student of a finished run directory, as a diffusion teacher (``registry``: the registry
    creating this teacher, which builds the run's original teacher and vets the student's class)."""
    if options.path is None:
        raise UserError("the run teacher needs path=<run directory>")
    return from_run(Run(options.path), registry, guidance_scale=options.guidance_scale, dtype=options.dtype)
