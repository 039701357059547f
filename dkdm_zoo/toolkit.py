"""The plugin toolkit: everything a student, teacher or method plugin imports from dkdm-zoo, in one place.

``from dkdm_zoo.toolkit import ...`` is the stable, documented surface for plugin code (the model
modules; the light module that registers hooks imports only ``dkdm_zoo.registry.hookimpl``).
CONTRIBUTING.md documents every name below and the contracts they serve; a test keeps the two
in sync. The implementations live with their owners (``dkdm_zoo.students.base``,
``dkdm_zoo.teachers.base``, ...); this module only gathers them. Importing it imports torch.

- spec and errors: ``TeacherSpec``, ``UserError``, ``IncompatibleError``, the preset names;
- options: ``OptionSet`` (a declared, checked set of options), ``takes_options`` and the range types;
- students: presets, compatibility checks, timestep and label handling, the condition embedding,
  example inputs, description, and ``check_student`` (the contract as one test);
- teachers: the ``Teacher`` base class, ``Condition``, ``TeacherOutput``, safe loading from a
  hub id or folder, and ``check_teacher``;
- methods: the ``Method`` base class and its typed contract (``SetupContext``, ``Network``,
  ``Update``, ``Plan``, ``Passes``, ``STUDENT``), and ``student_eps``.
"""

from __future__ import annotations

from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.methods.base import STUDENT, Method, Network, Passes, Plan, SetupContext, Update, student_eps
from dkdm_zoo.registry.classes import resolve_model_class
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET, TINY_STUDENT_PRESET
from dkdm_zoo.registry.options import (
    NonNegativeFloat,
    NonNegativeInt,
    OptionSet,
    PositiveFloat,
    PositiveInt,
    UnitInterval,
    Widths,
    takes_options,
)
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import (
    ConditionEmbedding,
    broadcast_timesteps,
    check_conditioning,
    check_groups,
    check_heads,
    check_patch,
    check_square,
    count_parameters,
    describe_student,
    example_inputs,
    fit_levels,
    fit_patch,
    labels_or_null,
    resolve_preset,
)
from dkdm_zoo.students.contract import check_student
from dkdm_zoo.teachers.base import Teacher, TeacherOutput
from dkdm_zoo.teachers.condition import Condition
from dkdm_zoo.teachers.contract import check_teacher
from dkdm_zoo.teachers.loading import (
    load_pretrained,
    load_scheduler_config,
    resolve_source,
    schedule_spec_fields,
)
from dkdm_zoo.teachers.reference import asset_folder

__all__ = [
    # spec, errors, presets
    "TeacherSpec",
    "UserError",
    "IncompatibleError",
    "DEFAULT_STUDENT_PRESET",
    "TINY_STUDENT_PRESET",
    # options
    "OptionSet",
    "takes_options",
    "PositiveInt",
    "NonNegativeInt",
    "PositiveFloat",
    "NonNegativeFloat",
    "UnitInterval",
    "Widths",
    # students
    "resolve_preset",
    "check_square",
    "check_patch",
    "fit_patch",
    "check_conditioning",
    "fit_levels",
    "check_groups",
    "check_heads",
    "broadcast_timesteps",
    "labels_or_null",
    "ConditionEmbedding",
    "example_inputs",
    "count_parameters",
    "describe_student",
    "resolve_model_class",
    "check_student",
    # teachers
    "Teacher",
    "Condition",
    "TeacherOutput",
    "resolve_source",
    "load_pretrained",
    "load_scheduler_config",
    "schedule_spec_fields",
    "asset_folder",
    "check_teacher",
    # methods
    "Method",
    "SetupContext",
    "Network",
    "Update",
    "Plan",
    "Passes",
    "STUDENT",
    "student_eps",
]
