"""Every hook has a test here, and CONTRIBUTING.md documents every hook's exact signature."""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import typer
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.recipes import discover_recipes
from dkdm_zoo.registry import build_registry, hookimpl, hookspecs
from dkdm_zoo.registry.loader import _make_register
from dkdm_zoo.registry.registry import PluginInfo, Registry
from tests.conftest import REPO

RECIPE = """
[recipe]
description = "from a plugin"
[teacher]
name = "ddpm-unet"
path = "some/folder"
[student]
name = "unet"
preset = "tiny"
"""


def plugin_with_all_hooks(recipe_dir: Path) -> types.ModuleType:
    module = types.ModuleType("all_hooks")
    sub = typer.Typer(help="toy commands")

    @sub.command("hello")
    def hello(name: str = "world") -> None:
        typer.echo(f"hello {name}")

    @hookimpl
    def register_teachers(register):
        register("toy-teacher", "dkdm_zoo.teachers.ddpm_unet:load", summary="t")

    @hookimpl
    def register_students(register):
        register("toy-student", "dkdm_zoo.students.unet:build", summary="s")

    @hookimpl
    def register_methods(register):
        register("toy-method", "dkdm_zoo.methods.dkdm:DKDM", summary="m", options={"rho": 0.1})

    @hookimpl
    def register_recipes(register):
        register(recipe_dir)

    @hookimpl
    def register_commands(register):
        register("toy", sub, help="commands from a plugin")

    for fn in (register_teachers, register_students, register_methods, register_recipes, register_commands):
        setattr(module, fn.__name__, fn)
    return module


def _registry(tmp_path: Path) -> Registry:
    (tmp_path / "toy-recipe.toml").write_text(RECIPE)
    return build_registry(entry_points=False, extra=[("all-hooks", plugin_with_all_hooks(tmp_path))])


def test_hook_register_teachers(tmp_path):
    assert _registry(tmp_path).get("teachers", "toy-teacher").plugin == "all-hooks"


def test_hook_register_students(tmp_path):
    assert _registry(tmp_path).get("students", "toy-student").plugin == "all-hooks"


def test_hook_register_methods(tmp_path):
    assert _registry(tmp_path).describe("methods", "toy-method")["options"] == {"rho": 0.1}


def test_hook_register_recipes(tmp_path):
    recipes, problems = discover_recipes(_registry(tmp_path))
    assert recipes["toy-recipe"].plugin == "all-hooks" and not problems
    assert recipes["toy-recipe"].description == "from a plugin"


def test_hook_register_commands(tmp_path):
    app = create_app(_registry(tmp_path))
    result = CliRunner().invoke(app, ["toy", "hello", "--name", "zoo"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello zoo"
    listed = CliRunner().invoke(app, ["plugins", "--json"])
    by_name = {p["name"]: p for p in json.loads(listed.output)}
    assert by_name["all-hooks"]["registered"]["commands"] == ["toy"]


def test_every_hook_has_a_test():
    tested = {
        name.removeprefix("test_hook_")
        for name in dir(sys.modules[__name__])
        if name.startswith("test_hook_")
    }
    specs = {
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "dkdm_zoo_spec")
    }
    assert specs == set(hookspecs.HOOK_NAMES)
    assert specs <= tested, f"hooks without a test: {sorted(specs - tested)}"


def test_contributing_documents_every_hook_signature():
    docs = (REPO / "CONTRIBUTING.md").read_text()
    registry = Registry()
    for name in hookspecs.HOOK_NAMES:
        spec = getattr(hookspecs, name)
        assert f"def {name}{_sig(spec)}" in docs, f"CONTRIBUTING.md lacks the signature of {name}"
        kind = hookspecs.KIND_OF_HOOK[name]
        register = _make_register(registry, PluginInfo("x", None, None, False), kind, {kind: []})
        assert f"register{_sig(register)}" in docs, (
            f"CONTRIBUTING.md lacks the register() signature for {name}"
        )


def _sig(fn) -> str:
    """The signature as written in the docs: string annotations unquoted, defaults as repr()."""
    sig = inspect.signature(fn)
    params = [
        p.replace(annotation=_Raw(p.annotation) if isinstance(p.annotation, str) else p.annotation)
        for p in sig.parameters.values()
    ]
    ret = sig.return_annotation
    return str(sig.replace(parameters=params, return_annotation=_Raw(ret) if isinstance(ret, str) else ret))


class _Raw:
    """Renders a string annotation without quotes inside inspect's formatting."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text
