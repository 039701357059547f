"""A run folder, a pipeline folder or a teacher folder never makes dkdm-zoo run code, even when the
command is started inside it with `python -m` (the working folder is then first on sys.path, so a
module file there is importable): classes are checked before any import, a file cannot shadow an
installed plugin package, and no file turns pickle on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from dkdm_zoo.config.recipes import Component, Recipe
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Manifest, Run
from dkdm_zoo.runs.student import original_teacher, save_student
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.testing.tiny_teachers import ddpm_unet_teacher, scheduler_config, tiny_unet
from tests.conftest import cli_env, run_cli
from tests.registry import plugin_factory as pf


def evil_source(marker: Path) -> str:
    """A module that leaves a marker file when it is imported, and looks like a model class."""
    return (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from diffusers import ModelMixin\nclass Net(ModelMixin):\n    pass\n"
    )


def make_run(folder: Path, *, one_step: bool = False, **teacher_options) -> Path:
    registry = build_registry(entry_points=False)
    teacher = ddpm_unet_teacher()
    torch.manual_seed(0)
    student = registry.create("students", "unet", teacher.spec, preset="tiny")
    if one_step:
        student = OneStepGenerator.wrap(student, teacher.spec.channels)
    run = Run(folder)
    recipe = Recipe("r", Component("ddpm-unet", teacher_options), Component("unet", {"preset": "tiny"}))
    run.write_manifest(Manifest.of(recipe, teacher.spec, student, one_step))
    save_student(run, student)
    return folder


def sample_inside(folder: Path, source: str, env=None):
    """`python -m dkdm_zoo.cli.app sample SOURCE` started in ``folder`` (which is then on sys.path)."""
    out = folder.parent / "out.png"
    return run_cli("sample", source, "--n", "1", "--steps", "1", "--out", str(out), cwd=folder, env=env)


def test_run_json_naming_a_module_in_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run")
    marker = tmp_path / "imported"
    (run / "evil.py").write_text(evil_source(marker))
    data = json.loads((run / "run.json").read_text())
    data["student"]["class"] = "evil:Net"
    (run / "run.json").write_text(json.dumps(data))
    result = sample_inside(run, ".")
    assert result.returncode == 2 and "refusing to import 'evil'" in result.stderr, result.stderr
    assert not marker.exists()


def test_a_one_step_config_naming_a_module_in_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run", one_step=True)
    marker = tmp_path / "imported"
    (run / "student" / "evil_backbone.py").write_text(evil_source(marker))
    (run / "evil_backbone.py").write_text(evil_source(marker))
    config = json.loads((run / "student/config.json").read_text())
    config["backbone_class"] = "evil_backbone:Net"
    (run / "student/config.json").write_text(json.dumps(config))
    result = sample_inside(run, ".")
    assert result.returncode == 2 and "refusing to import 'evil_backbone'" in result.stderr, result.stderr
    assert not marker.exists()


def test_a_file_in_the_working_folder_cannot_shadow_an_installed_plugin(tmp_path):
    """The plugin `toy-shadow` is installed and provides students from package `toy_models`, not yet
    imported; a run folder holding its own `toy_models/` must not get that imported instead."""
    site = tmp_path / "site"
    hooks = 'from dkdm_zoo.registry import hookimpl\n\n@hookimpl\ndef register_students(register):\n    register("toy-net", "toy_models.net:build")\n'
    pf.make_plugin_dist(site, "toy-shadow", "toy_shadow_hooks", hooks)
    (site / "toy_models").mkdir()
    (site / "toy_models" / "__init__.py").write_text("")
    (site / "toy_models" / "net.py").write_text("from diffusers import UNet2DModel as Net\n")
    run = make_run(tmp_path / "run")
    marker = tmp_path / "imported"
    (run / "toy_models").mkdir()
    (run / "toy_models" / "__init__.py").write_text(evil_source(marker))
    (run / "toy_models" / "net.py").write_text("from toy_models import Net\n")
    data = json.loads((run / "run.json").read_text())
    data["student"]["class"] = "toy_models.net:Net"
    (run / "run.json").write_text(json.dumps(data))
    env = cli_env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    result = sample_inside(run, ".", env=env)
    assert not marker.exists(), result.stderr
    assert result.returncode == 2 and "toy_models" in result.stderr and "working folder" in result.stderr
    # from another folder the installed package is the one imported (and it is a real model class)
    elsewhere = run_cli(
        "sample", str(run), "--n", "1", "--steps", "1", "--out", str(tmp_path / "x.png"), env=env
    )
    assert not marker.exists() and "refusing" not in elsewhere.stderr


def test_a_teacher_folder_naming_modules_in_its_json_files(tmp_path):
    """model_index.json and config.json name libraries and classes; dkdm-zoo reads them as names of a
    family (detection) and loads with fixed diffusers classes: nothing they name is imported."""
    folder = tmp_path / "teacher"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(folder)
    marker = tmp_path / "imported"
    (folder / "evil_lib.py").write_text(evil_source(marker))
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["evil_lib", "Net"]
    index["scheduler"] = ["evil_lib", "Net"]
    (folder / "model_index.json").write_text(json.dumps(index))
    config = json.loads((folder / "unet/config.json").read_text())
    config["_class_name"] = "UNet2DModel"
    (folder / "unet/config.json").write_text(json.dumps(config))
    result = sample_inside(folder, "ddpm-unet@.")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_allow_pickle_false_as_text_never_loads_pickle(tmp_path):
    from typer.testing import CliRunner

    from dkdm_zoo.cli.app import create_app

    folder = tmp_path / "pickled"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(
        folder, safe_serialization=False
    )
    app = create_app(build_registry(entry_points=False))
    for value in ("False", "false", "no", "0"):
        args = ["distill", "--teacher", f"ddpm-unet@{folder}", "--student", "unet", "--preset", "tiny"]
        result = CliRunner().invoke(app, [*args, "--dry-run", "--set", f"teacher.allow_pickle={value}"])
        assert result.exit_code == 2 and "safetensors" in result.stderr, (value, result.output)
    result = CliRunner().invoke(app, [*args, "--dry-run", "--set", "teacher.allow_pickle=true"])
    assert result.exit_code == 0, result.output  # the person running the command may opt in


def test_run_json_cannot_turn_on_pickle_for_sample(tmp_path):
    folder = tmp_path / "pickled"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(
        folder, safe_serialization=False
    )
    run = make_run(tmp_path / "run", path=str(folder), allow_pickle=True)
    with pytest.raises(Exception, match="pickle"):
        original_teacher(Run(run), build_registry(entry_points=False))
    shutil.rmtree(run)


def test_a_pipeline_folder_naming_a_library_in_model_index_imports_nothing(tmp_path, monkeypatch):
    """What docs/architecture.md relies on: diffusers loads a pipeline folder's components only from
    its own libraries and modules already imported, whatever model_index.json names."""
    from diffusers import DiffusionPipeline

    import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline on the diffusers module

    folder = tmp_path / "pipe"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(folder)
    marker = tmp_path / "imported"
    (tmp_path / "evil_lib_pipe.py").write_text(evil_source(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["evil_lib_pipe", "Net"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="evil_lib_pipe"):
        DiffusionPipeline.from_pretrained(folder)
    assert not marker.exists()
