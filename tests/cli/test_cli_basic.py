"""The CLI at a glance: list, info, plugins, recipes, version, help; errors; no torch on the fast path."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from dkdm_zoo import __version__
from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from tests.conftest import cli_env, run_cli, strip_ansi


def invoke(*args: str):
    app = create_app(build_registry(entry_points=False))
    return CliRunner().invoke(app, list(args))


def test_no_args_shows_help_and_version():
    result = invoke()
    assert "Usage" in strip_ansi(result.output) and "distill" in strip_ansi(result.output)
    assert invoke("--version").output.strip() == f"dkdm-zoo {__version__}"


def test_list_table_and_json():
    table = strip_ansi(invoke("list", "students").output)
    for name in ("unet", "dit", "convnext"):
        assert f" {name} " in table
    rows = json.loads(invoke("list", "teachers", "*-*", "--json").output)
    names = [r["name"] for r in rows]
    assert {"ddpm-unet", "latent-sd"} <= set(names) and "dit" not in names and "run" not in names
    assert names == sorted(names) and all(r["kind"] == "teacher" for r in rows)
    everything = {r["kind"] for r in json.loads(invoke("list", "--json").output)}
    assert everything == {"teacher", "student", "method", "recipe"}
    pattern_only = json.loads(invoke("list", "*unet*", "--json").output)
    assert {r["name"] for r in pattern_only} >= {"ddpm-unet", "unet"}


def test_info_shows_options_and_plugin():
    out = strip_ansi(invoke("info", "dkdm").output)
    assert "rho = 0.4" in out and "dkdm_zoo.methods.plugin" in out
    both = json.loads(invoke("info", "dit", "--json").output)
    assert {d["kind"] for d in both} == {"teacher", "student"}


def test_user_errors_are_one_line_exit_2():
    for args, needle in (
        (("info", "dkm"), "did you mean 'dkdm'"),
        (("list", "gadgets", "*"), "unknown kind 'gadgets'"),
        (("recipes", "show", "nope"), "unknown recipe 'nope'"),
    ):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        err = strip_ansi(result.stderr).strip()
        assert needle in err and "Traceback" not in err
        assert len(err.splitlines()) == 1, err


def test_recipes_list_and_show():
    listed = json.loads(invoke("recipes", "list", "--json").output)
    assert "cifar10-unet14m" in {r["name"] for r in listed}
    shown = strip_ansi(invoke("recipes", "show", "cifar10-unet14m").output)
    assert 'path = "google/ddpm-cifar10-32"' in shown and "batch_size = 128" in shown


def test_fast_path_does_not_import_torch():
    # `info` reads options off the factories' signatures, so it may import them; these never do
    code = (
        "import sys; from dkdm_zoo.cli.app import create_app; app = create_app()\n"
        "for args in (['--help'], ['list'], ['list', 'students', '--json'], ['plugins'], ['recipes', 'list']):\n"
        "    try: app(args)\n"
        "    except SystemExit: pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'timm', 'accelerate', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
