"""A finished run as a diffusers pipeline folder with its model card, written once by the command
that finishes the run (``distill``, after its evaluation) or rewritten by ``dkdm-zoo export``."""

from __future__ import annotations

import os
import shutil
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


def export_run(
    run: Run,
    registry: Any,
    *,
    student: nn.Module | None = None,
    teacher: Any = None,
    folder: str | os.PathLike[str] | None = None,
) -> Path:
    """The run's student as a diffusers pipeline and its model card in ``folder`` (default RUN/pipeline/).

    ``student`` and ``teacher`` spare loading them again when the caller holds them. The folder is
    written beside and renamed into place; an existing folder is replaced only if it is empty or a
    pipeline folder (has model_index.json); a failed export leaves nothing half-written.
    """
    from dkdm_zoo.export.card import write_model_card
    from dkdm_zoo.export.folder import save_pipeline
    from dkdm_zoo.runs.student import load_student

    out = Path(folder).expanduser() if folder is not None else run.pipeline_dir
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "model_index.json").is_file())
    ):
        raise UserError(
            f"{out} exists and is not a pipeline folder (no model_index.json): pass a new or empty folder"
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
    try:
        save_pipeline(student, run.manifest.teacher_spec, components, tmp)
        write_model_card(run, tmp, registry, location=out)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
