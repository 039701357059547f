"""Resolve a recipe plus CLI flags into a Recipe, and a Recipe into teacher, student and method objects.

`distill`, `sample` and `eval` share this so a name means the same thing everywhere. Importing this
module is torch-free; building objects imports what the registry's factories need.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.recipes import (
    Component,
    Recipe,
    parse_assignments,
    resolve_recipe,
    validate_against_registry,
)
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET

DEFAULT_METHOD = "dkdm"
DEFAULT_RUNS = Path("runs")


_FAMILY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # how registry names are spelled


def split_teacher(value: str) -> tuple[str, str | None]:
    """``NAME@SOURCE`` -> (NAME, SOURCE); a plain name -> (name, None)."""
    name, at, source = (part.strip() for part in value.strip().partition("@"))
    if not name or (at and not source):
        raise UserError(
            f"--teacher {value!r}: expected NAME, NAME@SOURCE or a folder / hub id, e.g. "
            "ddpm-unet@google/ddpm-cifar10-32"
        )
    return name, source or None


@dataclass(frozen=True)
class TeacherRef:
    """A resolved ``--teacher`` value: the family, its source, and how the family was chosen."""

    name: str
    source: str | None = None
    detected: str | None = None  # the one line saying what auto-detection chose (None when named)


def resolve_teacher(value: str, registry: Any) -> TeacherRef:
    """``FAMILY@SOURCE`` (the family wins), a registered NAME, or a bare folder / hub id whose
    model_index.json, config.json or run.json names its family (``dkdm_zoo.teachers.detect``)."""
    text = value.strip()
    name, source = split_teacher(text)
    if source is not None and _FAMILY_NAME.match(name):
        return TeacherRef(name, source)
    if source is None and name in {e.name for e in registry.list("teachers")}:
        return TeacherRef(name)
    from dkdm_zoo.teachers.sources import is_hub_id

    if not (Path(text).expanduser().exists() or is_hub_id(text)):
        registry.get("teachers", name)  # an unknown name: the error suggests the closest ones
    from dkdm_zoo.teachers.detect import detect_family

    found = detect_family(text, registry)
    return TeacherRef(found.family, text, found.describe())


def resolve(
    registry: Any,
    *,
    recipe: str | None = None,
    base: Recipe | None = None,
    teacher: str | None = None,
    teacher_path: str | None = None,
    student: str | None = None,
    preset: str | None = None,
    method: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    overrides: list[str] | None = None,
    announce: Callable[[str], None] | None = None,
) -> Recipe:
    """The recipe (by name/path, or ``base``), with flags applied on top; flags win.

    ``announce`` receives the one line saying which family an auto-detected ``--teacher`` got.
    """
    if base is None and recipe is not None:
        base = resolve_recipe(recipe, registry)
    if base is None:
        if teacher is None or student is None:
            raise UserError("pass --recipe NAME_OR_TOML, or both --teacher and --student")
        base = Recipe(name="", teacher=Component(""), student=Component(""), method=Component(DEFAULT_METHOD))
    out = replace(base)
    origins: dict[str, str] = {}  # section.key -> the flag that gave it, for errors
    if teacher is not None:
        try:
            ref = resolve_teacher(teacher, registry)
        except UnknownNameError as exc:  # point at the flag that named it
            raise UserError(f"--teacher: {exc}") from None
        if ref.detected is not None and announce is not None:
            announce(ref.detected)
        options = dict(out.teacher.options) if ref.name == out.teacher.name else {}
        if ref.source is not None:
            options["path"] = ref.source
            origins["teacher.path"] = "--teacher"
        out.teacher = Component(ref.name, options)
    if teacher_path is not None:
        out.teacher = Component(out.teacher.name, {**out.teacher.options, "path": teacher_path})
        origins["teacher.path"] = "--teacher-path"
    if student is not None and student != out.student.name:
        out.student = Component(student, {})
    if preset is not None:
        out.student = Component(out.student.name, {**out.student.options, "preset": preset})
        origins["student.preset"] = "--preset"
    if method is not None and method != out.method.name:
        out.method = Component(method, {})
    for flag, key, value in (("--steps", "steps", steps), ("--batch-size", "batch_size", batch_size)):
        if value is not None:
            out = out.set_train({key: value}, where=flag)
    if overrides:
        out = out.apply_overrides(overrides)
        origins.update({f"{section}.{name}": "--set" for section, name, _, _ in parse_assignments(overrides)})
    # Errors about a name point at the flag that gave it (unless --set renamed it afterwards).
    named = {
        "teachers": ("--teacher", teacher),
        "students": ("--student", student),
        "methods": ("--method", method),
    }
    flags = {
        kind: flag
        for kind, (flag, value) in named.items()
        if value is not None and not any(o.strip().startswith(f"{kind[:-1]}.name") for o in overrides or [])
    }
    return validate_against_registry(out, registry, flags, origins)


#: train settings a resumed run may change: they take effect from the resumed step and are recorded
#: in recipe.toml; every other setting (the teacher, student and method with their options, batch
#: size, gradient accumulation, seed, optimiser betas and weight decay, EMA decay, the teacher's
#: dtype) is fixed by what the checkpoint holds
RESUMABLE_TRAIN = frozenset(
    {
        "steps",
        "lr",
        "warmup_steps",
        "lr_schedule",
        "grad_clip",
        "mixed_precision",
        "compile",
        "channels_last",
        "checkpoint_every",
        "checkpoints_keep",
        "preview_every",
        "preview_samples",
        "preview_steps",
        "log_every",
        "tracker",
        "final_eval_samples",
        "setup_checkpoint_minutes",
    }
)


def resume_changes(stored: Recipe, requested: Recipe, where: str) -> list[str]:
    """What ``requested`` changes in the ``stored`` recipe of a run being resumed, as
    ``train.lr 0.0001 -> 5e-05`` lines; a change to anything a checkpoint fixes is one ``UserError``
    listing every such difference."""
    refused, changed = [], []
    for section in ("teacher", "student", "method"):
        before, after = _plain(getattr(stored, section)), _plain(getattr(requested, section))
        for key in sorted(set(before) | set(after), key=lambda k: (k != "name", k)):
            if before.get(key) != after.get(key):
                refused.append(f"{section}.{key} {_text(before.get(key))} -> {_text(after.get(key))}")
    old, new = dataclasses.asdict(stored.train), dataclasses.asdict(requested.train)
    for key in old:
        if old[key] != new[key]:
            line = f"train.{key} {_text(old[key])} -> {_text(new[key])}"
            (changed if key in RESUMABLE_TRAIN else refused).append(line)
    if refused:
        raise UserError(
            f"--resume: {where} cannot change {', '.join(refused)} (its checkpoints fix them); "
            "drop these changes, or start a new run in another --out"
        )
    return changed


def _plain(component: Component) -> dict[str, Any]:
    """name and options as JSON would hold them (tuples as lists; unset options dropped)."""
    options = {k: v for k, v in component.options.items() if v is not None}
    return json.loads(json.dumps({"name": component.name, **options}, default=str))


def _text(value: Any) -> str:
    return "(unset)" if value is None else repr(value)


def run_name(recipe: Recipe) -> str:
    return f"{recipe.name or recipe.teacher.name}-{recipe.student.name}-{recipe.method.name}"


def default_out(recipe: Recipe) -> Path:
    return DEFAULT_RUNS / run_name(recipe)


@dataclass
class Built:
    recipe: Recipe
    teacher: Any
    student: Any
    method: Any


def build_teacher(recipe: Recipe, registry: Any) -> Any:
    return registry.create("teachers", recipe.teacher.name, **recipe.teacher.options)


PROMPTS_HINT = (
    '--set \'teacher.prompts=["a photo of a cat", "a red bicycle"]\', or a file with one prompt per '
    "line: --set teacher.prompts=prompts.txt (in a recipe: prompts = [...] under [teacher])"
)


def check_run_conditions(teacher: Any, name: str, registry: Any) -> None:
    """A run draws the conditions it trains on from the teacher (class labels, prompts): check that
    works before anything trains, so ``--dry-run`` and ``info`` catch a text teacher without prompts."""
    if teacher.spec.conditioning == "none":
        return
    import torch

    try:
        teacher.sample_conditions(1, torch.Generator().manual_seed(0))
    except UserError as exc:
        options = registry.get("teachers", name).schema().options
        hint = f"; on the command line: {PROMPTS_HINT}" if "prompts" in options else ""
        raise UserError(f"teacher '{name}' cannot draw the conditions a run trains on: {exc}{hint}") from None


def build_student(recipe: Recipe, spec: Any, registry: Any) -> Any:
    options = dict(recipe.student.options)
    preset = options.pop("preset", DEFAULT_STUDENT_PRESET)
    return registry.create("students", recipe.student.name, spec, preset=preset, **options)


def build_method(recipe: Recipe, teacher: Any, student: Any, registry: Any) -> Any:
    return registry.create("methods", recipe.method.name, teacher, student, **recipe.method.options)


def build(recipe: Recipe, registry: Any) -> Built:
    """Teacher, student (initialised from ``train.seed``: same recipe, same initial weights) and method.

    The method may adapt the student it is given (BOOT wraps it as a one-step generator); the
    network to train and export is ``method.student``.
    """
    import torch

    teacher = build_teacher(recipe, registry)
    check_run_conditions(teacher, recipe.teacher.name, registry)
    torch.manual_seed(recipe.train.seed)
    student = build_student(recipe, teacher.spec, registry)
    method = build_method(recipe, teacher, student, registry)
    return Built(recipe, teacher, method.student, method)
