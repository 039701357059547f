"""Plugin loading: broken plugins are reported and skipped, strict mode raises, env filters work."""

from __future__ import annotations

import json
import os
import types

import pytest

from dkdm_zoo.errors import PluginError
from dkdm_zoo.registry import build_registry, hookimpl
from tests.conftest import cli_env, run_cli
from tests.registry import plugin_factory as pf


def module_from(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def test_duplicate_name_is_refused_naming_both_plugins():
    registry = build_registry(entry_points=False, extra=[("dup", module_from(pf.DUPLICATE, "dup"))])
    broken = {p.name: p for p in registry.plugins}["dup"]
    assert not broken.ok
    assert "'unet'" in broken.error and "'dup'" in broken.error and "dkdm_zoo.students.plugin" in broken.error
    assert registry.get("students", "unet").plugin == "dkdm_zoo.students.plugin"


def test_misspelled_hook_is_an_error_and_others_keep_working():
    registry = build_registry(entry_points=False, extra=[("typo", module_from(pf.MISSPELLED, "typo"))])
    broken = {p.name: p for p in registry.plugins}["typo"]
    assert "register_student" in broken.error
    assert not registry.plugin_manager.has_plugin("typo")
    assert registry.get("students", "unet")  # the rest still works


def test_failed_plugin_registers_nothing():
    module = types.ModuleType("half")

    @hookimpl
    def register_methods(register):
        register("half-ok", "x:y")
        raise RuntimeError("boom after one registration")

    module.register_methods = register_methods
    registry = build_registry(entry_points=False, extra=[("half", module)])
    assert "RuntimeError: boom" in {p.name: p for p in registry.plugins}["half"].error
    assert not registry.list("methods", "half-*")


def test_strict_mode_raises(monkeypatch):
    with pytest.raises(PluginError, match="already registered"):
        build_registry(entry_points=False, extra=[("dup", module_from(pf.DUPLICATE, "dup"))], strict=True)
    monkeypatch.setenv("DKDM_ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="register_student"):
        build_registry(entry_points=False, extra=[("typo", module_from(pf.MISSPELLED, "typo"))])


@pytest.fixture
def plugin_path(tmp_path):
    """Four real installed distributions: one good, three broken in different ways."""
    pf.make_plugin_dist(tmp_path, "toy-good-plugin", "toy_good_plugin", pf.GOOD, version="1.2.3")
    pf.make_plugin_dist(tmp_path, "toy-import-error", "toy_import_error", pf.IMPORT_ERROR)
    pf.make_plugin_dist(tmp_path, "toy-duplicate", "toy_duplicate", pf.DUPLICATE)
    pf.make_plugin_dist(tmp_path, "toy-misspelled", "toy_misspelled", pf.MISSPELLED)
    return tmp_path


def _env(plugin_path, **extra):
    return cli_env(PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]), **extra)


def test_cli_keeps_working_with_broken_entry_point_plugins(plugin_path):
    listed = run_cli("list", "students", "--json", env=_env(plugin_path))
    assert listed.returncode == 0, listed.stderr
    names = {row["name"]: row for row in json.loads(listed.stdout)}
    assert names["toy-mixer"]["plugin"] == "toy-good-plugin"
    assert {"unet", "dit", "convnext"} <= set(names)

    plugins = run_cli("plugins", "--json", env=_env(plugin_path))
    assert plugins.returncode == 0, plugins.stderr
    by_name = {p["name"]: p for p in json.loads(plugins.stdout)}
    assert by_name["toy-good-plugin"]["ok"] and by_name["toy-good-plugin"]["version"] == "1.2.3"
    assert by_name["toy-good-plugin"]["registered"] == {"students": ["toy-mixer"], "methods": ["toy-method"]}
    assert "ModuleNotFoundError" in by_name["toy-import-error"]["error"]
    assert "already registered by plugin 'dkdm_zoo.students.plugin'" in by_name["toy-duplicate"]["error"]
    assert "register_student" in by_name["toy-misspelled"]["error"]

    table = run_cli("plugins", env=_env(plugin_path))
    assert "broken" in table.stdout and "toy-import-error" in table.stdout
    assert run_cli("--help", env=_env(plugin_path)).returncode == 0


def test_cli_strict_mode_fails_loudly(plugin_path):
    result = run_cli("list", env=_env(plugin_path, DKDM_ZOO_STRICT_PLUGINS="1"))
    assert result.returncode != 0
    assert "PluginError" in result.stderr


def test_allowlist_and_autoload_switch(plugin_path):
    allow = run_cli("plugins", "--json", env=_env(plugin_path, DKDM_ZOO_LOAD_PLUGINS="toy-good-plugin"))
    names = {p["name"] for p in json.loads(allow.stdout) if not p["builtin"]}
    assert names == {"toy-good-plugin"}
    off = run_cli("plugins", "--json", env=_env(plugin_path, DKDM_ZOO_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert all(p["builtin"] for p in json.loads(off.stdout))
    none = run_cli("plugins", "--json", env=_env(plugin_path, DKDM_ZOO_LOAD_PLUGINS=""))
    assert all(p["builtin"] for p in json.loads(none.stdout))


def test_a_plugin_that_exits_is_isolated_like_any_broken_plugin(tmp_path):
    pf.make_plugin_dist(tmp_path, "toy-good-plugin", "toy_good_plugin", pf.GOOD)
    pf.make_plugin_dist(tmp_path, "toy-exit-import", "toy_exit_import", pf.EXITS_AT_IMPORT)
    pf.make_plugin_dist(tmp_path, "toy-exit-hook", "toy_exit_hook", pf.EXITS_WHILE_REGISTERING)
    listed = run_cli("list", "students", "--json", env=_env(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert "toy-mixer" in {row["name"] for row in json.loads(listed.stdout)}  # others still load
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=_env(tmp_path)).stdout)}
    assert plugins["toy-exit-import"]["error"] == "SystemExit: this plugin calls sys.exit at import"
    assert plugins["toy-exit-hook"]["error"] == "SystemExit: 3"
    assert plugins["toy-exit-hook"]["attempted"]["students"] == ["exit-student"] and not any(
        "exit-student" == row["name"] for row in json.loads(listed.stdout)
    )


def test_plugins_shows_load_times_and_flags_slow_ones(tmp_path):
    pf.make_plugin_dist(tmp_path, "toy-slow", "toy_slow", pf.SLOW)
    result = run_cli("plugins", "--json", env=_env(tmp_path))
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["toy-slow"]["load_seconds"] >= 0.6 and plugins["toy-slow"]["slow"]
    assert all(not p["slow"] for p in plugins.values() if p["builtin"])
    table = run_cli("plugins", env=_env(tmp_path)).stdout
    row = next(line for line in table.splitlines() if "toy-slow" in line)
    assert " ms slow " in row
    assert "slow to load (>= 0.5 s, paid by every dkdm-zoo command): 'toy-slow'" in " ".join(table.split())


def test_errors_in_plugin_commands_and_their_parameters_are_one_literal_line():
    import typer
    from typer.testing import CliRunner

    from dkdm_zoo.cli.app import create_app
    from dkdm_zoo.errors import UserError

    sub = typer.Typer()

    @sub.command("check")
    def check(count: int = 1) -> None:
        raise UserError("missing section [teacher] in [bold]recipe.toml[/bold]")

    module = types.ModuleType("cmd_plugin")
    module.register_commands = hookimpl(lambda register: register("toy", sub))
    app = create_app(build_registry(entry_points=False, extra=[("cmd", module)]))
    result = CliRunner().invoke(app, ["toy", "check"])
    assert result.exit_code == 2
    assert result.stderr == "error: missing section [teacher] in [bold]recipe.toml[/bold]\n"
    result = CliRunner().invoke(app, ["toy", "check", "--count", "x"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "'--count'" in result.stderr
    result = CliRunner().invoke(app, ["toy", "check", "--[red]flag"])
    assert result.exit_code == 2 and result.stderr.startswith("error: No such option: --[red]flag")
