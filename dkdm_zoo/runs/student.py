"""A run's networks: the final student (saved and loaded, safetensors only) and its original teacher.

The student's class is named by run.json and imported only if diffusers, dkdm_zoo or a plugin of
the command's registry that provides students defines it (``dkdm_zoo.registry.classes``, checked
before the import); a one-step generator's backbone class gets the same check. The original teacher
is rebuilt through the registry from run.json's name and options; a recorded ``allow_pickle`` is
overridden, never obeyed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.runs.run import Run, replace_folder

if TYPE_CHECKING:
    from torch import nn


def save_student(run: Run, student: nn.Module) -> Path:
    """``RUN/student/`` (save_pretrained, safetensors), written beside and renamed into place."""
    tmp = run.path / ".tmp-student"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        student.save_pretrained(tmp, safe_serialization=True)
        replace_folder(tmp, run.student_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run.student_dir


def load_student(run: Run, registry: Any, *, dtype: Any = None) -> nn.Module:
    """The final student in eval mode; weights from safetensors only, whatever any file says."""
    from dkdm_zoo.registry.classes import plugin_packages, resolve_model_class
    from dkdm_zoo.students.one_step import OneStepGenerator

    manifest = run.manifest
    run.require_finished()
    allowed = plugin_packages(registry)
    cls = resolve_model_class(manifest.student_class, allowed_packages=allowed, where=run.manifest_path)
    if issubclass(cls, OneStepGenerator):  # its config names the backbone class: the same check first
        config_path = run.student_dir / "config.json"
        try:
            backbone = json.loads(config_path.read_text()).get("backbone_class", "")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise UserError(f"cannot read {config_path}: {exc}") from None
        resolve_model_class(str(backbone), allowed_packages=allowed, where=config_path)
    if not any(run.student_dir.glob("*.safetensors")):
        raise UserError(f"{run.student_dir} has no .safetensors weights: run folders load safetensors only")
    kwargs: dict[str, Any] = {"use_safetensors": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        model = cls.from_pretrained(run.student_dir, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        for weights, problem in unreadable_safetensors(run.student_dir):
            raise UserError(
                f"{weights} is unreadable ({problem}): the run's student weights are truncated or corrupt; "
                f"write them again from its last checkpoint with `dkdm-zoo distill --out {run.path} --resume`"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the student in {run.student_dir}: {first}") from None
    return model.eval()


def original_teacher(run: Run, registry: Any, *, allow_pickle: bool = False) -> Any:
    """The teacher named in run.json, built through ``registry`` with its recorded options (checked
    against the family's schema like any recipe's). Pickle stays off unless the person running the
    command passes ``allow_pickle``."""
    manifest = run.manifest
    options = dict(manifest.teacher_options)
    if "allow_pickle" in options or allow_pickle:
        options["allow_pickle"] = allow_pickle
    entry = registry.get("teachers", manifest.teacher)
    options = entry.check_options(options, where=str(run.manifest_path))
    return registry.create("teachers", manifest.teacher, **options)


def unreadable_safetensors(folder: Path) -> list[tuple[Path, str]]:
    """The safetensors files in ``folder`` that cannot be read in full, with the reader's complaint."""
    from safetensors import safe_open

    bad = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                    fh.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any failure to read it back is the answer
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            bad.append((path, text))
    return bad
