"""Errors that point at plugins: a misspelled hook gets a did-you-mean, an unknown name points at the
broken plugin that would provide it, and no error starts with an empty location."""

from __future__ import annotations

import types

import pytest
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.config.recipes import Component, Recipe
from dkdm_zoo.config.resolve import resolve
from dkdm_zoo.config.validation import validate_against_registry
from dkdm_zoo.errors import PluginError, UserError
from dkdm_zoo.registry import build_registry, hookimpl
from tests.conftest import strip_ansi
from tests.registry.test_loader import module_from

TYPO = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def register_studnets(register):
    register("never", "x:y")
"""

NOTHING_CLOSE = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def make_everything(register):
    pass
"""


def half_registered() -> types.ModuleType:
    """Registers a method and a student, then raises: nothing is kept, but the names are known."""
    module = types.ModuleType("half")

    @hookimpl
    def register_students(register):
        register("half-net", "x:y")
        raise RuntimeError("boom after one registration")

    module.register_students = register_students
    return module


def import_error() -> types.ModuleType:
    """Stands in for a plugin whose import failed (the registry only knows its name)."""
    module = types.ModuleType("dkdm_zoo_my_net.plugin")

    @hookimpl
    def register_students(register):
        import this_module_does_not_exist_anywhere  # noqa: F401

    module.register_students = register_students
    return module


def error_of(registry, name: str) -> str:
    return {p.name: p for p in registry.plugins}[name].error


def test_misspelled_hook_suggests_the_hook():
    registry = build_registry(entry_points=False, extra=[("typo", module_from(TYPO, "typo"))])
    assert error_of(registry, "typo") == (
        "PluginError: @hookimpl 'register_studnets' is not a dkdm-zoo hook: did you mean 'register_students'?"
    )
    far = build_registry(entry_points=False, extra=[("far", module_from(NOTHING_CLOSE, "far"))])
    assert "'make_everything' is not a dkdm-zoo hook: hooks are register_teachers, " in error_of(far, "far")
    with pytest.raises(PluginError, match="did you mean 'register_students'"):
        build_registry(entry_points=False, extra=[("typo", module_from(TYPO, "typo"))], strict=True)


def test_unknown_name_a_broken_plugin_registered_names_it():
    registry = build_registry(entry_points=False, extra=[("half", half_registered())])
    with pytest.raises(UserError) as info:
        registry.get("students", "half-net")
    assert str(info.value) == (
        "unknown student 'half-net': plugin 'half' registers it but failed to load "
        "(RuntimeError: boom after one registration): see `dkdm-zoo plugins`"
    )


def test_unknown_name_like_a_broken_plugin_and_any_name_while_one_is_broken():
    registry = build_registry(entry_points=False, extra=[("my-net", import_error())])
    with pytest.raises(
        UserError, match=r"^unknown student 'my-net': plugin 'my-net' may provide it but failed"
    ):
        registry.get("students", "my-net")
    with pytest.raises(UserError) as info:
        registry.get("methods", "dkdmm")
    message = str(info.value)
    assert message.startswith("unknown method 'dkdmm': did you mean 'dkdm'?")
    assert message.endswith(
        "1 plugin(s) failed to load ('my-net') and may provide it: see `dkdm-zoo plugins`"
    )
    # without broken plugins the message is unchanged
    clean = build_registry(entry_points=False)
    with pytest.raises(UserError, match=r"did you mean 'dkdm'\? \(see `dkdm-zoo list methods`\)$"):
        clean.get("methods", "dkdmm")


def invoke(registry, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(registry), list(args))
    return result.exit_code, strip_ansi(result.output).strip()


def test_cli_distill_points_at_the_flag_and_the_broken_plugin(tmp_path):
    registry = build_registry(entry_points=False, extra=[("my-net", import_error())])
    code, out = invoke(
        registry, "distill", "--teacher", "digits-ddpm", "--student", "my-net", "--out", str(tmp_path / "r")
    )
    assert code == 2 and len(out.splitlines()) == 1, out
    assert out.startswith("error: --student: unknown student 'my-net': plugin 'my-net' may provide it")
    assert "ModuleNotFoundError" in out and "`dkdm-zoo plugins`" in out
    code, out = invoke(registry, "info", "my-net")
    assert code == 2 and "plugin 'my-net' may provide it but failed to load" in out


@pytest.mark.parametrize(
    ("flags", "start"),
    [
        ({"teacher": "digits-ddpmm", "student": "unet"}, "--teacher: unknown teacher 'digits-ddpmm'"),
        ({"teacher": "digits-ddpm", "student": "unett"}, "--student: unknown student 'unett'"),
        ({"teacher": "digits-ddpm", "student": "unet", "method": "dkdmm"}, "--method: unknown method"),
    ],
)
def test_flag_named_components_are_located_at_their_flag(flags: dict, start: str):
    with pytest.raises(UserError) as info:
        resolve(build_registry(entry_points=False), **flags)
    assert str(info.value).startswith(start)


def test_no_empty_location_prefix():
    registry = build_registry(entry_points=False)
    nameless = Recipe(name="", teacher=Component("digits-ddpm"), student=Component("nope"))
    with pytest.raises(UserError) as info:
        validate_against_registry(nameless, registry)
    assert str(info.value).startswith("student.name: unknown student 'nope'")
    bad_key = Recipe(name="", teacher=Component("digits-ddpm", {"pth": "x"}), student=Component("unet"))
    with pytest.raises(UserError) as info:
        validate_against_registry(bad_key, registry)
    assert str(info.value).startswith("unknown key 'teacher.pth' for teacher 'digits-ddpm'")
    # --set renaming a component: the location is no longer the flag
    with pytest.raises(UserError) as info:
        resolve(registry, teacher="digits-ddpm", student="unet", overrides=["student.name=nope"])
    assert str(info.value).startswith("student.name: unknown student 'nope'")


def test_toolkit_spec_fields_without_a_location():
    from dkdm_zoo.toolkit import schedule_spec_fields

    with pytest.raises(UserError) as info:
        schedule_spec_fields({"_class_name": "DDPMScheduler", "prediction_type": "flow"}, learned=False)
    assert str(info.value).startswith("prediction_type = 'flow' is not one of")
    with pytest.raises(UserError, match=r"^my-teacher: variance_type = 'learned' is not supported"):
        schedule_spec_fields(
            {"variance_type": "learned"}, learned=False, where="my-teacher", built_as="DDPMScheduler"
        )
    with pytest.raises(UserError, match=r"^my-teacher: names no scheduler class"):
        schedule_spec_fields({"beta_schedule": "linear"}, learned=False, where="my-teacher")
