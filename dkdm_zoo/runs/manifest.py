"""run.json: what a run distilled from what (``Manifest``, format_version 1). Torch-free.

Written when training starts (and again on resume), read by everything that rebuilds a run's
networks: its student class is loaded only through ``dkdm_zoo.registry.classes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET
from dkdm_zoo.spec import TeacherSpec

if TYPE_CHECKING:
    from dkdm_zoo.config.recipes import Recipe

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """run.json: the teacher (registry name, options, spec), the student (name, preset, options, class),
    the method, and whether the student is a one-step generator."""

    teacher: str
    teacher_options: dict[str, Any]
    teacher_spec: TeacherSpec
    student: str
    student_class: str  # "module:Class", loaded only through model_classes.resolve_model_class
    method: str
    student_preset: str = DEFAULT_STUDENT_PRESET
    student_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    one_step: bool = False
    #: the train settings filled from the student's or method's declared defaults: key -> value and
    #: who declared it (``recipes.apply_train_defaults``); everything else came from the recipe or flags
    train_defaults: dict[str, Any] = field(default_factory=dict)
    #: the student's own config (its ``config.json``: for ``--student teacher`` the network's class and
    #: config, the spec, the prediction type and what was pruned), so it rebuilds without the teacher
    student_config: dict[str, Any] = field(default_factory=dict)
    #: changes a ``--resume --allow-changes`` made to what the checkpoints were trained with, in order
    #: ("train.batch_size 4 -> 8"): the run is no longer what one uninterrupted command would give
    allowed_changes: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        recipe: Recipe,
        spec: TeacherSpec,
        student: Any,
        one_step: bool,
        allowed_changes: list[str] | None = None,
    ) -> Manifest:
        """The manifest of a run of ``recipe`` training ``student`` (the module the engine optimises)."""
        from dkdm_zoo.registry.classes import class_reference

        options = dict(recipe.student.options)
        config = _public_config(student)
        made_from = _public_config(getattr(student, "backbone", None)) or config
        own_preset = (made_from.get("source") or {}).get("preset") if "network_class" in made_from else None
        preset = str(options.pop("preset", own_preset or DEFAULT_STUDENT_PRESET))
        return cls(
            teacher=recipe.teacher.name,
            teacher_options=dict(recipe.teacher.options),
            teacher_spec=spec,
            student=recipe.student.name,
            student_class=class_reference(student),
            method=recipe.method.name,
            student_preset=preset,
            student_options=options,
            method_options=dict(recipe.method.options),
            one_step=bool(one_step),
            train_defaults={
                key: {"value": getattr(recipe.train, key), "from": who}
                for key, who in sorted(recipe.train_defaults.items())
            },
            allowed_changes=list(allowed_changes or []),
            student_config=config,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format_version": FORMAT_VERSION,
            "teacher": {"name": self.teacher, "options": self.teacher_options},
            "teacher_spec": self.teacher_spec.to_dict(),
            "student": {
                "name": self.student,
                "preset": self.student_preset,
                "options": self.student_options,
                "class": self.student_class,
            },
            "method": {"name": self.method, "options": self.method_options},
            "one_step": self.one_step,
            "train_defaults": self.train_defaults,
        }
        if self.student_config:
            data["student"]["config"] = self.student_config
        if self.allowed_changes:
            data["allowed_changes"] = self.allowed_changes
        return json.loads(json.dumps(data))  # JSON types only (tuples -> lists), as read back

    @classmethod
    def from_dict(cls, data: Any, where: Any = "run.json") -> Manifest:
        if not isinstance(data, dict):
            raise UserError(f"{where}: run.json must hold a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{where}: run.json format_version {data.get('format_version')!r} is not {FORMAT_VERSION}: "
                "this dkdm-zoo cannot read it; use the version that wrote it"
            )
        sections = {"teacher": ("name",), "student": ("name", "class"), "method": ("name",)}
        for section, keys in sections.items():
            part = data.get(section)
            if not isinstance(part, dict) or any(not isinstance(part.get(k), str) for k in keys):
                raise UserError(f"{where}: run.json needs '{section}' with {', '.join(keys)}")
            if not isinstance(part.get("options", {}), dict):
                raise UserError(f"{where}: run.json '{section}.options' must be an object")
        if not isinstance(data.get("teacher_spec"), dict):
            raise UserError(f"{where}: run.json needs 'teacher_spec'")
        try:
            spec = TeacherSpec.from_dict(data["teacher_spec"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: run.json has an invalid teacher_spec: {exc}") from None
        teacher, student, method = data["teacher"], data["student"], data["method"]
        return cls(
            teacher=teacher["name"],
            teacher_options=dict(teacher.get("options") or {}),
            teacher_spec=spec,
            student=student["name"],
            student_class=student["class"],
            method=method["name"],
            student_preset=str(student.get("preset", DEFAULT_STUDENT_PRESET)),
            student_options=dict(student.get("options") or {}),
            method_options=dict(method.get("options") or {}),
            one_step=data.get("one_step") is True,
            train_defaults=dict(data.get("train_defaults") or {}),
            allowed_changes=[str(c) for c in data.get("allowed_changes") or [] if isinstance(c, str)],
            student_config=dict(student.get("config") or {})
            if isinstance(student.get("config"), dict)
            else {},
        )


def _public_config(model: Any) -> dict[str, Any]:
    """A model's diffusers config without private keys, JSON types only ({} for none)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    return json.loads(
        json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, default=str)
    )
