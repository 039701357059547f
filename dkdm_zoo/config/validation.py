"""A recipe checked against the registry: every name known, every option checked and converted against
its entry's schema, and the train settings its student or method declares filled in."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig, train_config
from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET


def validate_against_registry(
    recipe: Recipe,
    registry: Any,
    flags: dict[str, str] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Recipe:
    """The recipe with every component name checked and every option checked and converted against
    its entry's schema (the factory's signature: this imports the factories).

    Errors start with where the value came from: ``origins`` maps ``section.key`` to what gave it
    (``{"method.rho": "--set"}``), ``flags`` maps a kind to the command-line flag that named it
    (``{"students": "--student"}``); anything else comes from the recipe's file or name, if any.
    """
    where = recipe.source or recipe.name
    prefix = f"{where}: " if where else ""
    origins = origins or {}
    checked = {}
    for kind, comp in (
        ("teachers", recipe.teacher),
        ("students", recipe.student),
        ("methods", recipe.method),
    ):
        try:
            entry = registry.get(kind, comp.name)
        except UnknownNameError as exc:
            flag = (flags or {}).get(kind)
            raise UserError(f"{flag}: {exc}" if flag else f"{prefix}{kind[:-1]}.name: {exc}") from None
        if not entry.available:
            checked[kind] = comp  # its factory cannot be imported here: building it says what is missing
            continue
        options = {}
        for key, value in comp.options.items():
            origin = origins.get(f"{kind[:-1]}.{key}", where)
            options.update(entry.check_options({key: value}, where=origin or ""))
        checked[kind] = Component(comp.name, options)
    recipe = dataclasses.replace(
        recipe, teacher=checked["teachers"], student=checked["students"], method=checked["methods"]
    )
    return apply_train_defaults(recipe, registry)


def apply_train_defaults(recipe: Recipe, registry: Any) -> Recipe:
    """The recipe with the train settings its student and method declare (``register(...,
    train_defaults=...)``) filled in where nothing set them.

    Order, last wins: TrainConfig's defaults, the declared ones, then whatever the recipe, a flag
    or ``--set`` gave. The declared ones are the method's when it declares any, else the student's
    (for its preset): a student's describe how its architecture learns a denoiser (DKDM, synthetic,
    data), a one-step method's how its objective trains (another learning rate, no warmup), and
    the two do not mix.
    """
    # Start again from what was set: applying twice (a recipe resolved, then --student changed) must
    # not keep the first student's values. A record read from recipe.toml (keys set there) is kept.
    set_values = {key: getattr(recipe.train, key) for key in recipe.train_set}
    train = dataclasses.replace(TrainConfig(), **set_values)
    declared_by = {k: v for k, v in recipe.train_defaults.items() if k in recipe.train_set}
    method = registry.get("methods", recipe.method.name)
    if method.train_defaults:
        entry, preset = method, None
        who = f"method '{recipe.method.name}'"
    else:
        # every student factory takes preset=DEFAULT_STUDENT_PRESET (the hook's contract): no import
        entry = registry.get("students", recipe.student.name)
        preset = str(recipe.student.options.get("preset", DEFAULT_STUDENT_PRESET))
        who = f"student '{recipe.student.name}' (preset {preset})"
    values = {k: v for k, v in entry.train_defaults_for(preset).items() if k not in recipe.train_set}
    train = train_config(values, where=f"train defaults of {who}, plugin {entry.plugin}", base=train)
    declared_by.update(dict.fromkeys(values, who))
    return dataclasses.replace(recipe, train=train, train_defaults=declared_by)
