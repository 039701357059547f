"""The registry API: wildcard listing, describe, create with overrides, did-you-mean errors."""

from __future__ import annotations

import types

import pytest

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.registry import build_registry, hookimpl
from dkdm_zoo.registry.registry import NOT_OPTIONS


def make_plugin(name: str = "toy"):
    module = types.ModuleType(name)

    def build(spec, preset="small", width=8):
        return {"spec": spec, "preset": preset, "width": width}

    @hookimpl
    def register_students(register):
        register("toy-small", build, summary="toy")
        register("toy-large", build, summary="toy large")
        register("other", "collections:OrderedDict", summary="lazy", options={"x": 1})

    module.register_students = register_students
    return module


def test_builtins_are_registered_through_hooks():
    registry = build_registry(entry_points=False)
    assert {e.name for e in registry.list("students")} >= {"unet", "dit", "convnext"}
    assert {e.name for e in registry.list("teachers")} >= {"ddpm-unet", "dit", "latent-sd", "run"}
    assert {e.name for e in registry.list("methods")} >= {"dkdm", "synthetic", "data"}
    assert all(p.builtin and p.ok for p in registry.plugins)
    # every built-in entry is attributed to one of the package's own plugin modules
    assert {e.plugin for kind in ("teachers", "students", "methods") for e in registry.list(kind)} <= {
        p.name for p in registry.plugins
    }


def test_wildcards_describe_and_create():
    registry = build_registry(builtins=False, entry_points=False, extra=[("toy", make_plugin())])
    assert [e.name for e in registry.list("students", "toy-*")] == ["toy-large", "toy-small"]
    assert [e.name for e in registry.list("students", "*large")] == ["toy-large"]
    assert registry.list("students", "nothing*") == []
    described = registry.describe("students", "toy-small")
    assert described["plugin"] == "toy"
    assert described["options"] == {"preset": "small", "width": 8}  # read off the factory signature
    built = registry.create("students", "toy-small", "SPEC", width=32)
    assert built == {"spec": "SPEC", "preset": "small", "width": 32}
    with pytest.raises(UserError, match="no option 'depth'"):
        registry.create("students", "toy-small", "SPEC", depth=3)


def test_lazy_factory_is_not_imported_until_created():
    registry = build_registry(builtins=False, entry_points=False, extra=[("toy", make_plugin())])
    entry = registry.get("students", "other")
    assert entry.factory == "collections:OrderedDict"  # still a string: listing imports nothing
    assert registry.describe("students", "other")["options"] == {"x": 1}
    assert registry.create("students", "other") == {}
    assert not isinstance(entry.factory, str)


def test_unknown_name_suggests_closest():
    registry = build_registry(entry_points=False)
    with pytest.raises(UnknownNameError) as info:
        registry.get("students", "unte")
    assert "did you mean 'unet'" in str(info.value)
    with pytest.raises(UserError, match="unknown kind 'widgets'"):
        registry.list("widgets")


def test_factories_give_fresh_managers():
    a = build_registry(builtins=False, entry_points=False, extra=[("toy", make_plugin())])
    b = build_registry(builtins=False, entry_points=False)
    assert a.plugin_manager is not b.plugin_manager
    assert a.list("students") and not b.list("students")


def test_optional_requirements_are_reported_without_import():
    module = types.ModuleType("needs")

    @hookimpl
    def register_teachers(register):
        register("needs-missing", "nowhere:load", requires=("a_module_that_is_not_installed",), extra="sd")

    module.register_teachers = register_teachers
    registry = build_registry(builtins=False, entry_points=False, extra=[("needs", module)])
    entry = registry.get("teachers", "needs-missing")
    assert not entry.available
    with pytest.raises(UserError, match=r"pip install 'dkdm-zoo\[sd\]'"):
        registry.create("teachers", "needs-missing")


def test_declared_options_of_builtins_match_their_factory_defaults():
    """Built-ins declare options so that `info` imports nothing; the declaration must not drift."""
    import inspect
    import json

    registry = build_registry(entry_points=False)
    checked = 0
    for kind in ("teachers", "students", "methods"):
        for entry in registry.list(kind):
            if entry.options is None:
                continue
            params = inspect.signature(entry.load()).parameters.values()
            defaults = {p.name: p.default for p in params if p.name not in NOT_OPTIONS and (
                p.kind is p.KEYWORD_ONLY or (p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD))}  # fmt: skip
            # tuples in signatures are lists in the (TOML-like) declarations
            assert json.loads(json.dumps(entry.options)) == json.loads(json.dumps(defaults)), (
                f"{kind} {entry.name}: declared options differ from the factory's"
            )
            checked += 1
    assert checked >= 3
