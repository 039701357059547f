"""Hook specifications: the whole public plugin API of dkdm-zoo.

Every hook receives a ``register`` callback built by the host, so the host knows which plugin
registered what, can refuse duplicate names, and records metadata. Built-in teachers, students,
methods and recipes use exactly these hooks. CONTRIBUTING.md documents each signature; a test
keeps the two in sync.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "dkdm_zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterFn = Callable[..., None]

#: The student preset dkdm-zoo passes when the user names none (``--preset`` / ``student.preset``).
DEFAULT_STUDENT_PRESET = "small"
#: The preset ``dkdm-zoo matrix`` and the test suites build: it must stay tiny (seconds on a CPU).
TINY_STUDENT_PRESET = "tiny"


@hookspec
def register_teachers(register: RegisterFn) -> None:
    """Register teacher families.

    ``register(name, factory, *, summary="", requires=(), extra=None, accepts=())``
    where ``factory`` is a callable or a lazy ``"module:attr"`` string; calling it with keyword
    options returns a ``dkdm_zoo.teachers.Teacher``. ``accepts`` names the classes the family
    loads (``_class_name`` of a folder's model_index.json or config.json, e.g. "DDPMPipeline"):
    ``--teacher PATH_OR_HUB_ID`` without a family picks the one teacher that accepts the folder's class.
    """


@hookspec
def register_students(register: RegisterFn) -> None:
    """Register student architectures.

    ``register(name, factory, *, summary="", requires=(), extra=None, train_defaults=None)``; the
    factory is called as ``factory(spec, preset="small", **overrides)`` and returns a network that
    fits the ``TeacherSpec`` or raises ``dkdm_zoo.errors.IncompatibleError``. ``train_defaults``
    maps a preset name ("*": every preset) to the ``[train]`` settings the student trains well at.
    """


@hookspec
def register_methods(register: RegisterFn) -> None:
    """Register distillation methods.

    ``register(name, factory, *, summary="", requires=(), extra=None, train_defaults=None)``; the
    factory is called as ``factory(teacher, student, **options)`` and returns a
    ``dkdm_zoo.methods.Method``. ``train_defaults`` (``{"lr": 1e-4}``) replace a student's own.
    """


@hookspec
def register_recipes(register: RegisterFn) -> None:
    """Register recipes: ``register(path)`` for a recipe TOML file or a folder of them."""


@hookspec
def register_commands(register: RegisterFn) -> None:
    """Add CLI sub-commands: ``register(name, typer_app, *, help="")`` attaches a Typer sub-app
    as ``dkdm-zoo NAME ...``."""


HOOK_NAMES: tuple[str, ...] = (
    "register_teachers",
    "register_students",
    "register_methods",
    "register_recipes",
    "register_commands",
)
KIND_OF_HOOK: dict[str, str] = {
    "register_teachers": "teachers",
    "register_students": "students",
    "register_methods": "methods",
    "register_recipes": "recipes",
    "register_commands": "commands",
}
ENTRY_KINDS: tuple[str, ...] = ("teachers", "students", "methods")
