"""A recipe plus command-line flags into one checked Recipe, and ``--teacher`` values into a family
and a source. `distill`, `sample` and `eval` share this so a name means the same thing everywhere.
Torch-free."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dkdm_zoo.config.catalog import resolve_recipe
from dkdm_zoo.config.recipes import DEFAULT_METHOD, Component, Recipe, parse_assignments
from dkdm_zoo.config.validation import validate_against_registry
from dkdm_zoo.errors import UnknownNameError, UserError

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
    from dkdm_zoo.teachers.sources import is_hub_id, looks_local, missing_path_error

    if not Path(text).expanduser().exists() and looks_local(text):
        raise missing_path_error(text, "teacher or run folder")
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
        if student is None and teacher is not None:  # one-step methods start from the teacher's network
            try:
                chosen = registry.get("methods", method or DEFAULT_METHOD).load()
            except UnknownNameError as exc:
                raise UserError(f"--method: {exc}") from None
            student = getattr(chosen, "default_student", None)
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


def run_name(recipe: Recipe) -> str:
    return f"{recipe.name or recipe.teacher.name}-{recipe.student.name}-{recipe.method.name}"


def default_out(recipe: Recipe) -> Path:
    return DEFAULT_RUNS / run_name(recipe)
