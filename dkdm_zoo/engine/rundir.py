"""The run directory: what a run leaves behind, and the checks before one starts.

recipe.toml       the resolved recipe
run.json          teacher / spec / student / method manifest (format_version 1)
metrics.jsonl     one JSON record per log step (+ "start" and "end" events)
previews/         step-XXXXXXX.png sample grids from the EMA student
checkpoints/      checkpoint-XXXXXXX/ folders and the ``latest`` pointer
student/          the final (EMA) student, save_pretrained
pipeline/         a diffusers DDPMPipeline for unconditional pixel-space UNet students
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.recipes import Recipe
from dkdm_zoo.spec import TeacherSpec

RUN_MARKERS = ("recipe.toml", "run.json")
MANIFEST_VERSION = 1


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing folder unless asked; ``overwrite`` only removes run folders."""
    if resume:
        if not (path / "recipe.toml").is_file():
            raise UserError(
                f"--resume: {path} is not a run folder (no recipe.toml); start a new run without --resume"
            )
        return
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise UserError(
                f"output folder {path} exists and is not empty: pass --resume to continue it or --overwrite to replace it"
            )
        if not any((path / m).exists() for m in RUN_MARKERS):
            raise UserError(
                f"--overwrite: {path} does not look like a run folder (no recipe.toml/run.json); refusing to delete it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def manifest(recipe: Recipe, spec: TeacherSpec, student: nn.Module, one_step: bool) -> dict[str, Any]:
    options = dict(recipe.student.options)
    preset = options.pop("preset", "small")
    cls = type(student)
    return {
        "format_version": MANIFEST_VERSION,
        "teacher": {"name": recipe.teacher.name, "options": dict(recipe.teacher.options)},
        "teacher_spec": spec.to_dict(),
        "student": {
            "name": recipe.student.name,
            "preset": preset,
            "options": options,
            "class": f"{cls.__module__}:{cls.__qualname__}",
        },
        "method": {"name": recipe.method.name, "options": dict(recipe.method.options)},
        "one_step": bool(one_step),
    }


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """run.json via the teachers' run-dir module when it is there (one owner of the format)."""
    try:
        from dkdm_zoo.teachers.run import write_run_manifest
    except ImportError:
        write_run_manifest = None
    if write_run_manifest is not None:
        try:
            write_run_manifest(path, data)
            return
        except TypeError:
            pass  # a different signature: fall back to the documented JSON
    (path / "run.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    file = path / "metrics.jsonl"
    return (
        [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []
    )


def save_preview(path: Path, step: int, images: Tensor) -> Path:
    from torchvision.utils import save_image

    out = path / "previews" / f"step-{step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    nrow = max(1, math.ceil(math.sqrt(len(images))))
    save_image(((images.float() + 1) / 2).clamp(0, 1).cpu(), out, nrow=nrow)
    return out


def export_student(path: Path, student: nn.Module, spec: TeacherSpec) -> list[str]:
    """``student/`` (save_pretrained, safetensors) and, where diffusers can run it, ``pipeline/``."""
    written = []
    if hasattr(student, "save_pretrained"):
        student.save_pretrained(path / "student", safe_serialization=True)
    else:
        from safetensors.torch import save_model

        (path / "student").mkdir(parents=True, exist_ok=True)
        save_model(student, str(path / "student" / "model.safetensors"))
    written.append("student")
    unet = _diffusers_unet(student)
    if unet is not None and spec.space == "pixel" and spec.conditioning == "none":
        from diffusers import DDPMPipeline, DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=spec.num_train_timesteps,
            **{
                k: v
                for k, v in spec.schedule.items()
                if k in ("beta_schedule", "beta_start", "beta_end", "trained_betas")
            },
            variance_type=spec.variance_type,
            clip_sample=spec.clip_sample,
            clip_sample_range=spec.clip_sample_range,
            prediction_type="epsilon",  # students always predict eps
        )
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(
            path / "pipeline", safe_serialization=True
        )
        written.append("pipeline")
    return written


def _diffusers_unet(student: nn.Module) -> nn.Module | None:
    from diffusers import UNet2DModel

    if hasattr(student, "to_diffusers_unet"):
        return student.to_diffusers_unet()
    return student if isinstance(student, UNet2DModel) else None
