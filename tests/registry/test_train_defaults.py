"""Training settings that belong to the student (and to the method): declared at registration, used
where neither a recipe nor a flag sets them, shown by `info` and `--dry-run`, recorded in the run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.config.recipes import TrainConfig, load_recipe_file
from dkdm_zoo.config.resolve import resolve
from dkdm_zoo.errors import PluginError, UserError
from dkdm_zoo.registry import build_registry
from tests.conftest import strip_ansi
from tests.registry.test_loader import module_from

PLUGIN = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def register_students(register):
    register("wide", "dkdm_zoo.students.unet:build", summary="a UNet that likes a slow rate",
             train_defaults={"*": {"lr": 3e-4, "weight_decay": 0.01}, "tiny": {"lr": 5e-3}})

@hookimpl
def register_methods(register):
    register("slow-dkdm", "dkdm_zoo.methods.dkdm:DKDM", summary="DKDM at its own rate",
             train_defaults={"lr": 7e-5})
"""


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False, extra=[("declares", module_from(PLUGIN, "declares"))])


def recipe_for(registry, *overrides: str, student: str = "wide", method: str = "dkdm", **flags):
    return resolve(
        registry, teacher="digits-ddpm", student=student, method=method, overrides=list(overrides), **flags
    )


def test_a_students_declared_settings_fill_what_nothing_set(registry):
    recipe = recipe_for(registry)
    assert recipe.train.lr == 3e-4 and recipe.train.weight_decay == 0.01
    assert recipe.train.warmup_steps == TrainConfig().warmup_steps  # not declared: TrainConfig's
    assert recipe.train_defaults == {
        "lr": "student 'wide' (preset small)",
        "weight_decay": "student 'wide' (preset small)",
    }
    tiny = recipe_for(registry, preset="tiny")  # the preset's own value beats "*"
    assert tiny.train.lr == 5e-3 and tiny.train.weight_decay == 0.01


def test_the_command_line_wins_and_a_methods_defaults_replace_the_students(registry):
    flagged = recipe_for(registry, "train.lr=1e-3")
    assert flagged.train.lr == 1e-3 and flagged.train.weight_decay == 0.01
    assert "lr" not in flagged.train_defaults
    by_method = recipe_for(registry, method="slow-dkdm")  # a method's defaults replace the student's
    assert by_method.train.lr == 7e-5 and by_method.train.weight_decay == TrainConfig().weight_decay
    assert by_method.train_defaults == {"lr": "method 'slow-dkdm'"}


def test_changing_the_student_leaves_nothing_of_the_first_ones_defaults(registry):
    """A recipe resolved for one student, then given another with --student: the first one's
    declared values must not survive where the second declares nothing."""
    first = recipe_for(registry)
    second = resolve(registry, base=first, student="convnext")
    assert second.train.weight_decay == TrainConfig().weight_decay
    declared = registry.get("students", "convnext").train_defaults_for("small")
    assert second.train.lr == declared["lr"] and set(second.train_defaults) == set(declared)


def test_shipped_students_and_one_step_methods_declare_defaults():
    """Every built-in student declares its small preset's rate; a one-step method's rate beats a
    student's denoiser rate (SiD diverges at the UNet's denoising rate)."""
    registry = build_registry(entry_points=False)
    for name in ("unet", "dit", "convnext"):
        assert "lr" in registry.get("students", name).train_defaults_for("small")
    unet = recipe_for(registry, student="unet").train.lr
    sid = recipe_for(registry, student="unet", method="sid")
    assert sid.train.lr == registry.get("methods", "sid").train_defaults_for()["lr"] != unet


def test_a_bad_declared_value_names_the_plugin():
    bad = PLUGIN.replace('"weight_decay": 0.01', '"weight_decay": "lots"')
    registry = build_registry(entry_points=False, extra=[("bad", module_from(bad, "bad"))])
    with pytest.raises(UserError) as info:
        recipe_for(registry)
    message = str(info.value)
    assert "student 'wide'" in message and "plugin bad" in message and "weight_decay" in message, message
    assert "\n" not in message


def test_a_malformed_declaration_is_refused_at_registration():
    flat = PLUGIN.replace('train_defaults={"*": {"lr": 3e-4, "weight_decay": 0.01}, "tiny": {"lr": 5e-3}}',
                          'train_defaults={"lr": 3e-4}')  # fmt: skip
    with pytest.raises(PluginError, match="train_defaults must map a preset name"):
        build_registry(entry_points=False, extra=[("flat", module_from(flat, "flat"))], strict=True)


def test_info_dry_run_and_the_run_show_them(registry, tmp_path):
    app = create_app(registry)
    info = CliRunner().invoke(app, ["info", "wide"])
    assert info.exit_code == 0, info.output
    text = strip_ansi(info.output)
    assert (
        "train defaults" in text
        and "every preset: train.lr = 0.0003" in text
        and "tiny: train.lr = 0.005" in text
    )

    dry = CliRunner().invoke(app, ["distill", "--teacher", "digits-ddpm", "--student", "wide", "--steps", "2",
                                   "--batch-size", "2", "--dry-run", "--out", str(tmp_path / "dry")])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "from the defaults of student 'wide' (preset small): lr=0.0003" in " ".join(
        strip_ansi(dry.output).split()
    )

    out = tmp_path / "run"
    args = ["distill", "--teacher", "digits-ddpm", "--student", "wide", "--preset", "tiny", "--steps", "1",
            "--batch-size", "2", "--set", "method.rho=0.002", "--set", "train.preview_every=0", "--out", str(out),
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["train_defaults"]["lr"] == {"value": 5e-3, "from": "student 'wide' (preset tiny)"}
    recorded = load_recipe_file(out / "recipe.toml")
    assert recorded.train.lr == 5e-3 and recorded.train_defaults["lr"] == "student 'wide' (preset tiny)"
    # resuming keeps what the run recorded, also where the declaration would now say otherwise
    resumed = resolve(registry, base=recorded, student="wide")
    assert resumed.train.lr == 5e-3 and resumed.train_defaults == recorded.train_defaults
