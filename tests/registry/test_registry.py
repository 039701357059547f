"""The registry API: wildcard listing, describe, create with overrides, did-you-mean errors."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal

import pytest
from annotated_types import Gt

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
        register("other", "collections:OrderedDict", summary="lazy")

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
    with pytest.raises(UserError, match=r"unknown key 'student.depth' for student 'toy-small'"):
        registry.create("students", "toy-small", "SPEC", depth=3)


def test_lazy_factory_is_not_imported_until_created():
    registry = build_registry(builtins=False, entry_points=False, extra=[("toy", make_plugin())])
    entry = registry.get("students", "other")
    assert entry.factory == "collections:OrderedDict"  # still a string: listing imports nothing
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


def test_options_are_declared_once_typed_and_converted():
    """One declaration: every built-in's options are its ``Options`` dataclass's fields (or, without
    one, its factory's annotated keyword parameters), and values are converted or refused against them
    (no hand-written option dicts to drift)."""
    import dataclasses
    import inspect

    registry = build_registry(entry_points=False)
    for kind in ("teachers", "students", "methods"):
        for entry in registry.list(kind):
            if not entry.available:
                continue
            factory, schema = entry.load(), entry.schema()
            declared = getattr(factory, "Options", None)
            if declared is not None:
                fields = {f.name: f.default for f in dataclasses.fields(declared)}
            else:
                params = inspect.signature(factory).parameters
                fields = {n: p.default for n, p in params.items() if n not in NOT_OPTIONS}
            assert set(schema.options) <= set(fields), (kind, entry.name)
            for name, option in schema.options.items():
                assert option.default == fields[name], (kind, entry.name, name)
                assert option.annotation is not Any, f"{kind} {entry.name}: option {name} has no type"
    dkdm = registry.get("methods", "dkdm")
    assert dkdm.check_options({"rho": 1, "variant": "iterative"}) == {"rho": 1.0, "variant": "iterative"}
    for bad, needle in (
        ({"rho": "abc"}, "method.rho = 'abc' is not a finite number"),
        ({"kl_weight": "abc"}, "method.kl_weight = 'abc' is not a finite number"),
        ({"rho": float("nan")}, "method.rho = nan is not a finite number"),
        ({"variant": "static"}, "one of 'dynamic', 'iterative', 'shuffled'"),
        ({"pool_init_steps": True}, "method.pool_init_steps = True is not an integer"),
        ({"rhoo": 1}, "unknown key 'method.rhoo' for method 'dkdm' (did you mean 'rho'?)"),
    ):
        with pytest.raises(UserError) as info:
            dkdm.check_options(bad, where="--set")
        assert str(info.value).startswith("--set: ") and needle in str(info.value), info.value
    teacher = registry.get("teachers", "ddpm-unet")
    # a string is never a truthy boolean: "False" is false, anything but true/false is refused
    assert teacher.check_options({"allow_pickle": "False"}) == {"allow_pickle": False}
    with pytest.raises(UserError, match=r"teacher.allow_pickle = 'nope' is not true or false"):
        teacher.check_options({"allow_pickle": "nope"})
    with pytest.raises(UserError, match=r"teacher.guidance_scale = 'abc' is not a finite number, or unset"):
        teacher.check_options({"guidance_scale": "abc"})
    boot = registry.get("methods", "boot")
    assert boot.check_options({"init_from_teacher": "false"}) == {"init_from_teacher": False}
    assert boot.check_options({"init_from_teacher": "auto"}) == {"init_from_teacher": "auto"}


def test_a_typed_plugin_factory_is_checked_and_registry_is_injected():
    seen = {}

    def load(
        path: str | None = None,
        scale: Annotated[float, Gt(0)] = 1.0,
        mode: Literal["a", "b"] = "a",
        sizes: tuple[int, ...] = (1,),
        *,
        registry,
    ):
        seen.update(path=path, scale=scale, mode=mode, sizes=sizes, registry=registry)
        return seen

    assert isinstance(load.__annotations__["scale"], str)  # postponed: resolved in this module
    module = types.ModuleType("typed")
    module.register_teachers = hookimpl(lambda register: register("typed", load))
    registry = build_registry(builtins=False, entry_points=False, extra=[("typed", module)])
    registry.create("teachers", "typed", scale=2, sizes=[3, 4])
    assert seen == {"path": None, "scale": 2.0, "mode": "a", "sizes": (3, 4), "registry": registry}
    described = registry.describe("teachers", "typed")
    assert described["options"] == {"path": None, "scale": 1.0, "mode": "a", "sizes": (1,)}
    assert described["option_types"]["scale"] == "float > 0"
    for bad, needle in (
        ({"scale": 0}, "teacher.scale = 0 is not a finite number > 0"),
        ({"scale": float("inf")}, "teacher.scale = inf is not a finite number > 0"),
        ({"mode": "c"}, "teacher.mode = 'c' is not one of 'a', 'b'"),
        ({"sizes": "abc"}, "teacher.sizes = 'abc' is not a list of integers"),
        ({"registry": registry}, "unknown key 'teacher.registry'"),
    ):
        with pytest.raises(UserError) as info:
            registry.create("teachers", "typed", **bad)
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_option_sets_check_on_construction_and_share_by_extension():
    """A method built directly (not through the registry) is checked by the same schema, with the same
    one-line message; SiD and Diff-Instruct share one option set and differ where they declare it."""
    import dataclasses

    from dkdm_zoo.methods.dkdm import DKDMOptions
    from dkdm_zoo.methods.score_distill import DiffInstructOptions, ScoreDistillOptions, SiDOptions
    from dkdm_zoo.teachers.loading import HubTeacherOptions

    with pytest.raises(UserError, match=r"^method\.rho = -1 is not a finite number > 0$"):
        DKDMOptions(rho=-1)
    with pytest.raises(UserError, match=r"^method\.variant = 'static' is not one of"):
        DKDMOptions(variant="static")
    assert DKDMOptions(rho=1).rho == 1.0 and isinstance(DKDMOptions(rho=1).rho, float)  # converted
    with pytest.raises(UserError, match=r"^teacher\.guidance_scale = nan is not"):
        HubTeacherOptions(guidance_scale=float("nan"))

    shared = {f.name for f in dataclasses.fields(ScoreDistillOptions)}
    assert {f.name for f in dataclasses.fields(SiDOptions)} == shared | {"alpha"}
    assert {f.name for f in dataclasses.fields(DiffInstructOptions)} == shared
    assert (SiDOptions().init_sigma, DiffInstructOptions().init_sigma) == (2.5, 1.0)
    registry = build_registry(entry_points=False)
    for name in ("sid", "diff-instruct"):
        assert set(registry.get("methods", name).schema().options) >= shared
