"""Every hook has a test here, and CONTRIBUTING.md documents every hook's exact signature."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import dkdm_zoo.toolkit as toolkit
from dkdm_zoo.cli.app import create_app
from dkdm_zoo.config.catalog import discover_recipes
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.registry import build_registry, hookimpl, hookspecs
from dkdm_zoo.registry.loader import _make_register
from dkdm_zoo.registry.registry import PluginInfo, Registry
from dkdm_zoo.scaffold import KINDS
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.convnext import ConvNeXtStudent
from dkdm_zoo.teachers.reference import asset_folder
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
        register("toy-method", "dkdm_zoo.methods.dkdm:DKDM", summary="m")

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
    """A teacher a plugin registers is built through its factory and predicts like the family it wraps."""
    registry = _registry(tmp_path)
    assert registry.get("teachers", "toy-teacher").plugin == "all-hooks"
    teacher = registry.create("teachers", "toy-teacher", path=str(asset_folder("digits-ddpm")))
    reference = registry.create("teachers", "digits-ddpm")
    x, t = torch.randn(2, *teacher.spec.sample_shape), torch.tensor([10, 900])
    torch.testing.assert_close(teacher.predict(x, t).eps, reference.predict(x, t).eps)


def test_hook_register_students(tmp_path):
    """A student a plugin registers is built for a teacher's spec and honours the student contract."""
    registry = _registry(tmp_path)
    assert registry.get("students", "toy-student").plugin == "all-hooks"
    spec = TeacherSpec(sample_shape=(1, 8, 8), conditioning="class", num_classes=3)
    toolkit.check_student(registry.create("students", "toy-student", spec, preset="tiny"), spec)


def test_hook_register_methods(tmp_path):
    """A method a plugin registers has its options read off its declaration and trains: one loss."""
    registry = _registry(tmp_path)
    assert registry.describe("methods", "toy-method")["options"]["rho"] == 0.4
    teacher = registry.create("teachers", "digits-ddpm")
    student = registry.create("students", "toy-student", teacher.spec, preset="tiny")
    method = registry.create("methods", "toy-method", teacher, student, rho=0.01, pool_init_steps=1)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), batch_size=2, steps=1))
    loss, _ = method.loss(student, 2, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(UserError, match="method.rho"):
        registry.create("methods", "toy-method", teacher, student, rho=0)


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


def test_contributing_documents_the_toolkit_and_the_contracts():
    """A plugin can be written from CONTRIBUTING.md alone: every toolkit name (functions with their
    parameters), the spec's fields, the base classes' methods, the preset names and `plugin new`."""
    docs = (REPO / "CONTRIBUTING.md").read_text()
    for name in toolkit.__all__:
        obj = getattr(toolkit, name)
        documented = f"`{_short_sig(obj)}`" if inspect.isfunction(obj) else f"`{name}`"
        assert documented in docs, f"CONTRIBUTING.md lacks {documented} (dkdm_zoo.toolkit)"
    for field in dataclasses.fields(toolkit.TeacherSpec):
        assert f"`{field.name}`" in docs, f"CONTRIBUTING.md lacks the TeacherSpec field `{field.name}`"
    for cls in (toolkit.Teacher, toolkit.Method):
        public = [name for name in vars(cls) if not name.startswith("_")]
        missing = [name for name in public if f"`{name}" not in docs]
        assert not missing, f"CONTRIBUTING.md lacks {cls.__name__}.{missing}"
    for preset in (toolkit.DEFAULT_STUDENT_PRESET, toolkit.TINY_STUDENT_PRESET):
        assert f'`"{preset}"`' in docs
    params = list(inspect.signature(ConvNeXtStudent.forward).parameters.values())[1:]  # no self
    forward = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
    assert f"`forward({forward})`" in docs, "CONTRIBUTING.md lacks the student forward signature"
    assert f"`dkdm-zoo plugin new NAME --kind {'|'.join(KINDS)} [--dir DIR]`" in docs
    for guide in ("README.md", "CONTRIBUTING.md"):  # pip users have no source tree
        assert "plugins/dkdm-zoo-uvit" not in (REPO / guide).read_text(), guide


def _short_sig(fn) -> str:
    """``name(a, b, *, c, **kw)``: parameter names only, as the toolkit table writes them."""
    params, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}")
        else:
            if p.kind is p.KEYWORD_ONLY and not star:
                params.append("*")
                star = True
            params.append(p.name)
    return f"{fn.__name__}({', '.join(params)})"


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
