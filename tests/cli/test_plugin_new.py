"""`dkdm-zoo plugin new`: each kind is generated without torch, installed with pip, found through its
entry point, lint-clean, and its own tests (the contract, one training step on a shipped teacher) pass."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from dkdm_zoo.scaffold import KINDS, TEMPLATES, plugin_names, render
from tests.conftest import REPO, cli_env, strip_ansi

PLUGINS = {"toy-net": "student", "toy-teacher": "teacher", "toy-method": "method"}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), list(args))
    return result.exit_code, strip_ansi(result.output).strip()


def test_names_are_derived_once():
    names = plugin_names("my-net")
    assert (names.dist, names.module, names.class_name) == ("dkdm-zoo-my-net", "dkdm_zoo_my_net", "MyNet")
    assert plugin_names("dkdm-zoo-fast_dit").module == "dkdm_zoo_fast_dit"


@pytest.mark.parametrize("kind", KINDS)
def test_every_placeholder_is_filled(kind: str):
    rendered = render(kind, plugin_names("my-net"))
    assert {
        "pyproject.toml",
        "README.md",
        "dkdm_zoo_my_net/plugin.py",
        "tests/test_dkdm_zoo_my_net.py",
    } <= set(rendered)
    for path, text in rendered.items():
        assert "$" not in text, path
    assert 'my-net = "dkdm_zoo_my_net.plugin"' in rendered["pyproject.toml"]
    plugin = rendered["dkdm_zoo_my_net/plugin.py"]
    assert f"def register_{kind}s(register):" in plugin
    assert not re.search(r"^\s*(import|from)\s+(torch|diffusers|dkdm_zoo\.toolkit)", plugin, re.M)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("plugin", "new", "My Net", "--kind", "student"),
            "plugin name 'My Net' is not valid: use lowercase",
        ),
        (("plugin", "new", "-x", "--kind", "student"), None),  # an option-like name: click's usage error
        (("plugin", "new", "unet", "--kind", "student"), "a student named 'unet' is already registered"),
        (("plugin", "new", "digits-ddpm", "--kind", "teacher"), "a teacher named 'digits-ddpm' is already"),
    ],
)
def test_refusals_are_one_line(tmp_path, args, message):
    code, out = invoke(*args, "--dir", str(tmp_path))
    assert code == 2
    if message is not None:
        assert out.startswith(f"error: {message}") and len(out.splitlines()) == 1, out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_existing_folder_is_never_touched(tmp_path):
    (tmp_path / "my-net").mkdir()
    (tmp_path / "my-net" / "keep.txt").write_text("mine")
    code, out = invoke("plugin", "new", "my-net", "--kind", "student", "--dir", str(tmp_path))
    assert code == 2 and len(out.splitlines()) == 1
    assert (
        out
        == f"error: {tmp_path / 'my-net'} already exists: choose another name or --dir (nothing was written)"
    )
    assert [p.name for p in (tmp_path / "my-net").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-net"]  # no staging folder left behind


def test_writes_the_package_and_says_what_next(tmp_path):
    code, out = invoke("plugin", "new", "my-net", "--kind", "teacher", "--dir", str(tmp_path / "new"))
    assert code == 0, out
    folder = tmp_path / "new" / "my-net"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(render("teacher", plugin_names("my-net")))
    assert f"pip install -e {folder}" in out and "--teacher my-net" in out
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["my-net"]  # the staging folder was renamed


def test_templates_ship_in_the_wheel():
    hatchling = pytest.importorskip("hatchling.builders.wheel")
    shipped = {f.distribution_path for f in hatchling.WheelBuilder(str(REPO)).recurse_included_files()}
    templates = {str(Path(str(p)).relative_to(REPO)) for p in Path(str(TEMPLATES)).rglob("*.tmpl")}
    assert len(templates) == 1 + 3 * 5  # pyproject + README, __init__, plugin, implementation, test per kind
    assert templates <= shipped, sorted(templates - shipped)


GENERATE = """
import sys
from dkdm_zoo.cli.app import create_app
app = create_app()
for name, kind in {plugins}.items():
    try:
        app(["plugin", "new", name, "--kind", kind, "--dir", {folder!r}])
    except SystemExit as exc:
        assert not exc.code, exc.code
heavy = sorted(m for m in ("torch", "diffusers", "timm") if m in sys.modules)
print("HEAVY", heavy)
"""

LISTED = """
import json, sys
from dkdm_zoo.registry import build_registry
registry = build_registry()
heavy = sorted(m for m in ("torch", "diffusers", "timm") if m in sys.modules)
plugins = {{p.name: p.to_dict() for p in registry.plugins if p.name in {plugins}}}
entries = {{e.name: e.plugin for kind in ("teachers", "students", "methods") for e in registry.list(kind)}}
print(json.dumps({{"heavy": heavy, "plugins": plugins, "entries": entries}}))
"""


@pytest.mark.slow
def test_generated_plugins_install_and_train(tmp_path):
    folder, site = tmp_path / "plugins", tmp_path / "site"
    env = cli_env(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))

    generated = subprocess.run(
        [sys.executable, "-c", GENERATE.format(plugins=PLUGINS, folder=str(folder))],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert "HEAVY []" in generated.stdout, "`plugin new` must not import torch"

    # pip install, as a user would (offline: no build isolation, no dependency resolution)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(site)]
    installed = subprocess.run(
        [*pip, *(str(folder / name) for name in PLUGINS)], capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    listed = subprocess.run(
        [sys.executable, "-c", LISTED.format(plugins=sorted(PLUGINS))],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout.strip().splitlines()[-1])
    assert found["heavy"] == [], "a generated plugin module must not import torch"
    for name, kind in PLUGINS.items():
        plugin = found["plugins"][name]
        assert plugin["ok"] and not plugin["builtin"] and plugin["version"] == "0.1.0", plugin
        assert plugin["registered"] == {f"{kind}s": [name]}
        assert found["entries"][name] == name

    if importlib.util.find_spec("ruff"):
        for name in PLUGINS:
            for check in (["check"], ["format", "--check"]):
                linted = subprocess.run(
                    [sys.executable, "-m", "ruff", *check, "--no-cache", "."],
                    capture_output=True, text=True, cwd=folder / name, timeout=120,
                )  # fmt: skip
                assert linted.returncode == 0, (name, check, linted.stdout[-3000:])

    # Each plugin's own tests: its contract, then one training step on a shipped teacher via the CLI.
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGINS],
        capture_output=True, text=True, env=env, cwd=folder, timeout=900,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-2000:]
    assert "12 passed" in tested.stdout, tested.stdout[-2000:]
