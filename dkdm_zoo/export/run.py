"""A finished run as a diffusers pipeline folder with its model card, written once by the command
that finishes the run (``distill``, after its evaluation) or rewritten by ``dkdm-zoo export``. A LoRA
student is written as a diffusers LoRA for its teacher's pipeline (``export.adapters``), merged
into a full pipeline on request or where that pipeline loads no LoRA."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.runs.run import Run, replace_folder

if TYPE_CHECKING:
    from torch import nn

    from dkdm_zoo.teachers.base import PipelineComponents


def pipeline_components(run: Run, registry: Any, teacher: Any = None) -> PipelineComponents:
    """What a pipeline of this run reuses from its teacher (VAE, text encoder): ``teacher`` when the
    caller holds it, else the original teacher rebuilt from run.json, only when one is needed."""
    from dkdm_zoo.runs.student import original_teacher
    from dkdm_zoo.teachers.base import PipelineComponents

    spec = run.manifest.teacher_spec
    if spec.space == "pixel" and spec.conditioning != "text":
        return PipelineComponents()
    return (teacher if teacher is not None else original_teacher(run, registry)).pipeline_components()


@dataclass(frozen=True)
class Exported:
    path: Path
    kind: str  # the diffusers pipeline class (an adapters-only LoRA: the teacher's, which loads it)
    adapters_only: bool  # a LoRA without merged weights
    note: str | None = None  # one line for stderr: a LoRA merged because its pipeline loads no LoRA


def export_run(
    run: Run,
    registry: Any,
    *,
    student: nn.Module | None = None,
    teacher: Any = None,
    folder: str | os.PathLike[str] | None = None,
    merge: bool = False,
) -> Exported:
    """The run's student as a diffusers pipeline and its model card in ``folder`` (default RUN/pipeline/).

    A LoRA student: its adapters, scheduler and card only, for the teacher's own pipeline; ``merge``
    adds the merged full pipeline (also written, with a note, where the teacher's pipeline class loads
    no LoRA). ``student`` and ``teacher`` spare loading them again when the caller holds them. The
    folder is written beside and renamed into place; an existing folder is replaced only if it is
    empty or an export (model_index.json or lora_pipeline.json); a failed export leaves nothing
    half-written.
    """
    from dkdm_zoo.export.adapters import save_adapters
    from dkdm_zoo.export.card import write_model_card
    from dkdm_zoo.export.folder import save_pipeline
    from dkdm_zoo.export.lora_card import INFO as LORA_INFO
    from dkdm_zoo.runs.student import load_student
    from dkdm_zoo.students.teacher_net import lora_network

    out = Path(folder).expanduser() if folder is not None else run.pipeline_dir
    if out.exists() and (
        not out.is_dir()
        or (any(out.iterdir()) and not any((out / n).is_file() for n in ("model_index.json", LORA_INFO)))
    ):
        raise UserError(
            f"{out} exists and is not a pipeline folder or LoRA export (no model_index.json or {LORA_INFO}): pass a new or empty folder"
        )
    if student is None:  # a LoRA student's base (or a custom-call family's network) is its teacher's
        from dkdm_zoo.runs.student import original_teacher
        from dkdm_zoo.teachers.as_student import bind_run_student

        built: dict[str, Any] = {} if teacher is None else {"teacher": teacher}

        def original() -> Any:
            if "teacher" not in built:
                built["teacher"] = original_teacher(run, registry)
            return built["teacher"]

        student = bind_run_student(load_student(run, registry), original)
        teacher = built.get("teacher", teacher)
    components = pipeline_components(run, registry, teacher)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    spec = run.manifest.teacher_spec
    note = None
    try:
        tmp.mkdir()
        kind = None if merge else save_adapters(student, spec, components, tmp)
        if kind is None:
            kind = save_pipeline(student, spec, components, tmp)
            if lora_network(student) is not None and not (tmp / "lora").is_dir():
                note = (
                    f"{out}: {kind} loads no LoRA, so the LoRA student is exported with its adapters "
                    "merged into full weights"
                )
        write_model_card(run, tmp, registry, location=out)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out, kind, adapters_only=not (out / "model_index.json").is_file(), note=note)
