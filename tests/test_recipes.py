"""Recipes are data only, validated with errors that name the file, the key and what was expected."""

from __future__ import annotations

import pytest

from dkdm_zoo.config.catalog import discover_recipes, resolve_recipe
from dkdm_zoo.config.recipes import TrainConfig, load_recipe_file
from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry

GOOD = """
[recipe]
name = "mine"
[teacher]
name = "ddpm-unet"
path = "teacher-folder"
[student]
name = "unet"
preset = "tiny"
[method]
name = "dkdm"
rho = 0.2
[train]
steps = 10
lr = 2e-4
ema_decay = 0
"""


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_recipe_and_defaults(tmp_path):
    recipe = load_recipe_file(write(tmp_path, GOOD))
    assert recipe.name == "mine" and recipe.teacher.options == {"path": "teacher-folder"}
    assert recipe.method.options == {"rho": 0.2} and recipe.student.options == {"preset": "tiny"}
    assert recipe.train.steps == 10 and recipe.train.batch_size == TrainConfig().batch_size
    assert isinstance(recipe.train.ema_decay, float)
    again = load_recipe_file(write(tmp_path, recipe.dumps(), "again.toml"))
    assert again.to_dict() == recipe.to_dict()  # dumps() round-trips


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("steps = 10", "stepz = 10"), "unknown key 'train.stepz'"),
        (("steps = 10", 'steps = "ten"'), "train.steps = 'ten' is not an integer > 0"),
        (("steps = 10", "steps = 0"), "train.steps = 0 is not an integer > 0"),
        (("steps = 10", "steps = 1.5"), "train.steps = 1.5 is not an integer > 0"),
        (("lr = 2e-4", "lr = nan"), "train.lr = nan is not a finite number > 0"),
        (("lr = 2e-4", "lr = inf"), "train.lr = inf is not a finite number > 0"),
        (("lr = 2e-4", "lr = true"), "train.lr = True is not a finite number > 0"),
        (("ema_decay = 0", "ema_decay = 1"), "train.ema_decay = 1 is not a finite number >= 0 and < 1"),
        (("ema_decay = 0", "compile = 1.5"), "train.compile = 1.5 is not true or false"),
        (("lr = 2e-4", 'lr = 2e-4\nmixed_precision = "fp8"'), "one of 'no', 'fp16', 'bf16'"),
        (("[train]", "train = 3\n[x]"), "unknown section(s) x"),
        (
            ('[recipe]\nname = "mine"', '[recipe]\nname = "mine"\nauthor = "me"'),
            "unknown key 'recipe.author'",
        ),
        (("[method]", "[methd]"), "unknown section(s) methd"),
        (('name = "unet"', 'nam = "unet"'), "missing key 'student.name'"),
        (("rho = 0.2", "rho = [0.2"), "invalid TOML"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, edit, needle):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(UserError) as info:
        load_recipe_file(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_registry_validation_of_names_and_options(tmp_path):
    registry = build_registry(entry_points=False)
    with pytest.raises(UserError, match=r"unknown key 'method.rhoo' for method 'dkdm'"):
        resolve_recipe(str(write(tmp_path, GOOD.replace("rho = 0.2", "rhoo = 0.2"))), registry)
    with pytest.raises(UserError, match=r"student.name: unknown student 'unte': did you mean 'unet'"):
        resolve_recipe(str(write(tmp_path, GOOD.replace('name = "unet"', 'name = "unte"'))), registry)


def test_overrides(tmp_path):
    recipe = load_recipe_file(write(tmp_path, GOOD))
    changed = recipe.apply_overrides(
        ["train.steps=99", "method.rho=0.5", "student.preset=small", "train.mixed_precision=bf16"]
    )
    assert changed.train.steps == 99 and changed.method.options["rho"] == 0.5
    assert changed.student.options["preset"] == "small" and changed.train.mixed_precision == "bf16"
    with pytest.raises(UserError, match="expected section.key=value"):
        recipe.apply_overrides(["steps=3"])
    with pytest.raises(UserError, match="unknown key 'train.nope'"):
        recipe.apply_overrides(["train.nope=1"])


def test_every_shipped_recipe_is_valid():
    registry = build_registry(entry_points=False)
    recipes, problems = discover_recipes(registry)
    assert recipes and not problems
    for info in recipes.values():
        recipe = resolve_recipe(str(info.path), registry)
        assert recipe.name == info.name


def test_which_train_values_were_set_is_known(tmp_path):
    """Values a recipe, a flag or --set gave are told apart from TrainConfig's defaults (so defaults
    from elsewhere, e.g. a student's, can fill only the rest)."""
    from dkdm_zoo.config.resolve import resolve

    registry = build_registry(entry_points=False)
    recipe = load_recipe_file(write(tmp_path, GOOD.replace('path = "teacher-folder"', "")))
    assert recipe.train_set == {"steps", "lr", "ema_decay"}
    resolved = resolve(
        registry, recipe=str(tmp_path / "r.toml"), batch_size=8, overrides=["train.warmup_steps=5"]
    )
    assert resolved.train_set == {"steps", "lr", "ema_decay", "batch_size", "warmup_steps"}
    assert resolved.train.batch_size == 8 and resolved.train.warmup_steps == 5
    assert resolved.train.grad_accum == TrainConfig().grad_accum  # a default, not in train_set
    stored = load_recipe_file(write(tmp_path, resolved.dumps(), "stored.toml"))
    assert stored.train_set == set(TrainConfig.__dataclass_fields__)  # a run's recipe.toml fixes all
