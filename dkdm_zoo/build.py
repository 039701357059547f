"""Resolve a recipe plus CLI flags into a Recipe, and a Recipe into teacher, student and method objects.

`distill`, `sample` and `eval` share this so a name means the same thing everywhere. Importing this
module is torch-free; building objects imports what the registry's factories need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.recipes import Component, Recipe, TrainConfig, resolve_recipe, validate_against_registry
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET

DEFAULT_METHOD = "dkdm"
DEFAULT_RUNS = Path("runs")


def split_teacher(value: str) -> tuple[str, str | None]:
    """``NAME@SOURCE`` -> (NAME, SOURCE); a plain name -> (name, None)."""
    name, at, source = (part.strip() for part in value.strip().partition("@"))
    if not name or (at and not source):
        raise UserError(
            f"--teacher {value!r}: expected NAME or NAME@SOURCE, e.g. ddpm-unet@google/ddpm-cifar10-32"
        )
    return name, source or None


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
) -> Recipe:
    """The recipe (by name/path, or ``base``), with flags applied on top; flags win."""
    if base is None and recipe is not None:
        base = resolve_recipe(recipe, registry)
    if base is None:
        if teacher is None or student is None:
            raise UserError("pass --recipe NAME_OR_TOML, or both --teacher and --student")
        base = Recipe(name="", teacher=Component(""), student=Component(""), method=Component(DEFAULT_METHOD))
    out = replace(base, train=replace(base.train))
    if teacher is not None:
        name, source = split_teacher(teacher)
        options = dict(out.teacher.options) if name == out.teacher.name else {}
        if source is not None:
            options["path"] = source
        out.teacher = Component(name, options)
    if teacher_path is not None:
        out.teacher = Component(out.teacher.name, {**out.teacher.options, "path": teacher_path})
    if student is not None and student != out.student.name:
        out.student = Component(student, {})
    if preset is not None:
        out.student = Component(out.student.name, {**out.student.options, "preset": preset})
    if method is not None and method != out.method.name:
        out.method = Component(method, {})
    if steps is not None:
        out.train.steps = steps
    if batch_size is not None:
        out.train.batch_size = batch_size
    _validate_train(out.train)
    if overrides:
        out = out.apply_overrides(list(overrides))
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
    validate_against_registry(out, registry, flags)
    return out


def _validate_train(train: TrainConfig) -> None:
    for name in ("steps", "batch_size"):
        value = getattr(train, name)
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    train.validate()


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
    torch.manual_seed(recipe.train.seed)
    student = build_student(recipe, teacher.spec, registry)
    method = build_method(recipe, teacher, student, registry)
    return Built(recipe, teacher, method.student, method)
