"""A resolved Recipe into objects: the teacher, the student (from ``train.seed``) and the method, each
built through the command's registry. Torch is imported when something is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dkdm_zoo.config.recipes import Recipe
from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET


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


def build_student(recipe: Recipe, spec: Any, registry: Any, teacher: Any = None) -> Any:
    return create_student(registry, recipe.student.name, spec, teacher, dict(recipe.student.options))


def create_student(
    registry: Any,
    name: str,
    spec: Any,
    teacher: Any = None,
    options: dict[str, Any] | None = None,
    *,
    default_preset: str = DEFAULT_STUDENT_PRESET,
) -> Any:
    """Student ``name`` for ``spec``. A factory with a ``teacher`` parameter (``--student teacher``) gets
    the teacher itself and its own default preset when none is named; others get ``default_preset``."""
    import inspect

    options = dict(options or {})
    entry = registry.get("students", name)
    factory = entry.load()
    try:
        takes_teacher = "teacher" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_teacher = False
    if takes_teacher:  # the teacher is the factory's input, not a user option
        return factory(spec, teacher=teacher, **entry.check_options(options, require=True))
    preset = options.pop("preset", default_preset)
    return registry.create("students", name, spec, preset=preset, **options)


def build_method(recipe: Recipe, teacher: Any, student: Any, registry: Any) -> Any:
    from dkdm_zoo.methods.base import refuse_flow_teacher

    # before the factory runs: a method's set-up reads its teacher's noise process
    name = recipe.method.name
    refuse_flow_teacher(registry.get("methods", name).load(), teacher, name)
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
    student = build_student(recipe, teacher.spec, registry, teacher)
    method = build_method(recipe, teacher, student, registry)
    return Built(recipe, teacher, method.student, method)
