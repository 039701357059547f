"""Hostile values on the command line and from plugins: each one line (exit 2), at once."""

from __future__ import annotations

import types

import numpy as np
import pytest

from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.registry.hookspecs import hookimpl
from dkdm_zoo.registry.loader import build_registry
from tests.hostile.conftest import FAST, TINY, invoke, refused
from tests.methods.tiny import teacher_factory, tiny_student


def test_a_run_name_longer_than_the_file_system_allows(tmp_path):
    refused(
        invoke("distill", *TINY, "--steps", "1", "--out", tmp_path / ("x" * 300), *FAST),
        "the file system allows",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", str(2**64)],
        ["--batch-size", str(2**63)],
        ["--set", f"train.steps={2**70}"],
        ["--set", f"method.pool_init_steps={2**65}"],
    ],
    ids=["steps-flag", "batch-size-flag", "steps-set", "method-int"],
)
def test_integers_past_int64_are_refused_before_any_work(tmp_path, args):
    refused(invoke("distill", *TINY, *args, "--out", tmp_path / "run", *FAST), "is not an integer")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_guidance_scale_is_refused(finished_tiny, tmp_path, value):
    refused(
        invoke("sample", finished_tiny, "--n", "2", "--guidance-scale", value, "--out", tmp_path / "g.png"),
        "guidance_scale",
    )
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    "source",
    ["./no-such-run", "../no-such-folder/run", "~/no-such-run-dkdm", "ddpm-unet@./typo", "SUBDIR/typo"],
)
def test_a_misspelled_local_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch, source):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    source = source.replace("SUBDIR", "runs")
    # the local-path line, not the hub's (retries, then advice to download)
    err = refused(invoke("sample", source, "--n", "2"), "does not exist", "check the spelling")
    assert "hub" not in err and "download" not in err


def test_a_hub_id_is_still_a_hub_id():
    from dkdm_zoo.teachers.sources import is_hub_id

    assert is_hub_id("google/ddpm-cifar10-32") and not is_hub_id("./google/ddpm-cifar10-32")


def _registry_with(**hooks):
    plugin = types.SimpleNamespace(
        register_teachers=hookimpl(lambda register: register("tiny", teacher_factory)),
        register_students=hookimpl(lambda register: register("tiny-unet", tiny_student)),
        **hooks,
    )
    return build_registry(extra=[("hostile-plugin", plugin)], entry_points=False)


def test_a_lazy_plugin_factory_whose_module_is_missing(tmp_path):
    registry = _registry_with(
        register_methods=hookimpl(lambda register: register("ghost", "hostile_no_such_module:Ghost"))
    )
    err = refused(
        invoke("distill", *TINY, "--method", "ghost", "--out", tmp_path / "r", *FAST, registry=registry),
        "method 'ghost' (plugin hostile-plugin)",
        "hostile_no_such_module",
        "reinstall the plugin",
    )
    assert "ModuleNotFoundError" not in err
    registry = _registry_with(
        register_methods=hookimpl(lambda register: register("ghost", "dkdm_zoo.methods.dkdm:NoSuchClass"))
    )
    refused(
        invoke("distill", *TINY, "--method", "ghost", "--out", tmp_path / "r", *FAST, registry=registry),
        "names 'NoSuchClass'",
    )


class NumpyStateDKDM(DKDM):
    """A plugin method whose state holds a numpy array: no checkpoint can hold it."""

    def state_dict(self):
        return {**super().state_dict(), "histogram": np.zeros(3)}


def test_a_method_state_a_checkpoint_cannot_hold_is_refused_at_setup(tmp_path, monkeypatch):
    registry = _registry_with(
        register_methods=hookimpl(lambda register: register("numpy-state", NumpyStateDKDM))
    )
    calls = {"n": 0}
    real = DKDM.loss

    def counted(self, *args):
        calls["n"] += 1
        return real(self, *args)

    monkeypatch.setattr(DKDM, "loss", counted)
    refused(
        invoke(
            "distill",
            *TINY,
            "--method",
            "numpy-state",
            "--steps",
            "3",
            "--out",
            tmp_path / "r",
            *FAST,
            registry=registry,
        ),
        "NumpyStateDKDM.state_dict()['histogram'] is a ndarray",
        "torch.Tensor or JSON values",
    )
    assert calls["n"] == 0  # before the first training step, not at the first checkpoint
    assert not (tmp_path / "r").exists()


def test_a_prompts_folder_is_called_a_folder(tmp_path):
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.teachers.latent_sd import read_prompts

    with pytest.raises(UserError, match="is a folder: pass a text file"):
        read_prompts(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        read_prompts(tmp_path / "prompts.txt")


RECIPES = {
    "array-of-tables": '[[teacher]]\nname = "tiny"\n[student]\nname = "tiny-unet"\n',
    "top-level-key": 'teacher = "tiny"\nstudent = "tiny-unet"\n',
    "not-toml": "this is { not toml",
    "empty": "",
    "binary": b"\x00\xff\xfe\x80garbage",
    "unknown-section": '[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\n[trian]\nsteps = 2\n',
    "string-for-a-number": '[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\n[train]\nsteps = "2"\n',
    "negative-steps": '[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\n[train]\nsteps = -2\n',
    "nan-lr": '[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\n[train]\nlr = nan\n',
}


def test_a_key_that_toml_puts_in_the_student_table_is_refused(tmp_path):
    """``train = 5`` after [student] belongs to [student] (TOML): an unknown student option."""
    path = tmp_path / "recipe.toml"
    path.write_text('[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\ntrain = 5\n')
    refused(invoke("distill", "--recipe", path, "--out", tmp_path / "run", *FAST), "has no option 'train'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", RECIPES)
def test_a_hostile_recipe_is_one_line_naming_the_file(tmp_path, name):
    path = tmp_path / "recipe.toml"
    data = RECIPES[name]
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    refused(invoke("distill", "--recipe", path, "--out", tmp_path / "run", *FAST), str(path))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1e400"])
def test_a_non_finite_teacher_guidance_in_distill_is_refused(tmp_path, value):
    from dkdm_zoo.registry.loader import build_registry as real_registry

    result = invoke(
        "distill",
        "--teacher",
        "digits-dit",
        "--student",
        "dit",
        "--set",
        f"teacher.guidance_scale={value}",
        "--out",
        tmp_path / "run",
        "--dry-run",
        registry=real_registry(entry_points=False),
    )
    refused(result, "teacher.guidance_scale")
