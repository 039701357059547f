"""`run`: a finished dkdm-zoo run directory (its trained student) as a teacher, for chained distillation.

Run directory format (the engine writes it with ``write_run_manifest``; this module reads it):

    RUN/run.json   {"format_version": 1,
                    "teacher": {"name", "options"}, "teacher_spec": TeacherSpec.to_dict(),
                    "student": {"name", "preset", "options", "class": "module:ClassName"},
                    "method": {"name", "options"}, "one_step": bool}
    RUN/student/   the final student's save_pretrained folder (config.json + safetensors)

A student predicts eps (plus variance channels where the original teacher learned them) on the
original teacher's schedule: ``student(x, t, class_labels=None, encoder_hidden_states=None)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import import_model_class
from dkdm_zoo.teachers.base import Condition, Teacher
from dkdm_zoo.teachers.loading import check_weights, parse_dtype, resolve_source

MANIFEST_NAME = "run.json"
FORMAT_VERSION = 1
_SECTIONS = {"teacher": ("name", "options"), "student": ("name", "class"), "method": ("name",)}


def _validate(data: Any, where: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UserError(f"{where}: run.json must hold a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{where}: run.json format_version {data.get('format_version')!r} is not {FORMAT_VERSION}: "
            "this dkdm-zoo cannot read it; use the version that wrote it"
        )
    for section, keys in _SECTIONS.items():
        part = data.get(section)
        if not isinstance(part, dict) or any(k not in part for k in keys):
            raise UserError(f"{where}: run.json needs '{section}' with {', '.join(keys)}")
    if not isinstance(data.get("teacher_spec"), dict):
        raise UserError(f"{where}: run.json needs 'teacher_spec'")
    return data


def write_run_manifest(run_dir: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``RUN/run.json`` atomically (temp file + rename) after checking its shape."""
    run_dir = Path(run_dir)
    data = _validate(json.loads(json.dumps(data)), run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target


def read_run_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated contents of ``RUN/run.json``."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a dkdm-zoo run directory (no run.json): pass the output folder of a finished run"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    return _validate(data, path)


class RunTeacher(Teacher):
    """A trained student as a teacher: eps-prediction on the original teacher's schedule."""

    def __init__(
        self,
        student: nn.Module,
        spec: TeacherSpec,
        manifest: dict[str, Any],
        *,
        guidance_scale: float | None = None,
    ):
        super().__init__(spec, guidance_scale=guidance_scale)
        self.student = student
        self.manifest = manifest
        self._original: Teacher | None = None
        self.to("cpu")

    @property
    def original(self) -> Teacher:
        """The run's original teacher, built through the registry on first use (decode, text)."""
        if self._original is None:
            from dkdm_zoo.registry import build_registry

            info = self.manifest["teacher"]
            self._original = build_registry().create(
                "teachers", info["name"], **dict(info.get("options") or {})
            )
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
        kwargs = cond.to(x_t.device).model_kwargs() if cond is not None else {}
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


def load(
    path: str | os.PathLike[str] | None = None, guidance_scale: float | None = None, dtype: str = "float32"
) -> RunTeacher:
    """The final student of a finished run directory, as a diffusion teacher."""
    if path is None:
        raise UserError("the run teacher needs path=<run directory>")
    run_dir = Path(path).expanduser()
    manifest = read_run_manifest(run_dir)
    if manifest.get("one_step"):
        raise UserError(
            f"{run_dir} holds a one-step generator (BOOT): it is not a diffusion model and cannot be a teacher"
        )
    student_dir = run_dir / "student"
    if not (student_dir / "config.json").is_file():
        raise UserError(
            f"{run_dir} has no student/ folder: the run did not finish; resume it or pick a finished run"
        )
    check_weights(resolve_source(student_dir), None, allow_pickle=False)
    cls = import_model_class(manifest["student"]["class"])
    student = cls.from_pretrained(student_dir, use_safetensors=True, torch_dtype=parse_dtype(dtype))
    try:
        original_spec = TeacherSpec.from_dict(manifest["teacher_spec"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{run_dir}/run.json: invalid teacher_spec: {exc}") from exc
    spec = dataclasses.replace(original_spec, prediction_type="epsilon", family="run")
    teacher = RunTeacher(student, spec, manifest, guidance_scale=guidance_scale)
    return teacher.to("cpu", parse_dtype(dtype))
