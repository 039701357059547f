"""The run folder's one owner (dkdm_zoo.runs.run): the manifest, and what a file in it may make us do.

A run.json or a saved config names the student's class; nothing outside diffusers, dkdm_zoo and
the plugins that provide students is imported (checked before the import), and no file turns on pickle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

from dkdm_zoo.config.recipes import Component, Recipe
from dkdm_zoo.errors import UserError
from dkdm_zoo.export.folder import save_pipeline
from dkdm_zoo.registry import build_registry
from dkdm_zoo.registry.classes import class_reference
from dkdm_zoo.runs import Manifest, Run
from dkdm_zoo.runs.student import load_student, original_teacher, save_student
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.teachers.base import PipelineComponents
from dkdm_zoo.testing.tiny_teachers import ddpm_unet_teacher, scheduler_config, tiny_unet

EVIL = "dkdm_evil_student_module"


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> Path:
    """An importable module that leaves a marker file when imported: it must never be."""
    marker = tmp_path / "imported"
    (tmp_path / f"{EVIL}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nclass Net:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(EVIL, None)


def make_run(folder: Path, registry, *, one_step: bool = False, **teacher_options) -> Run:
    teacher = ddpm_unet_teacher()
    torch.manual_seed(0)
    student = registry.create("students", "unet", teacher.spec, preset="tiny")
    if one_step:
        student = OneStepGenerator.wrap(student, teacher.spec.channels)
    run = Run(folder)
    recipe = Recipe("r", Component("ddpm-unet", teacher_options), Component("unet", {"preset": "tiny"}))
    run.write_manifest(Manifest.of(recipe, teacher.spec, student, one_step))
    save_student(run, student)
    return run


def test_manifest_round_trip_and_errors(registry, tmp_path):
    run = make_run(tmp_path / "run", registry, path="some/teacher")
    again = Run(run.path).manifest
    assert again == run.manifest
    assert again.student_class == "dkdm_zoo.students.unet:UNetStudent" and again.student_preset == "tiny"
    assert again.teacher_options == {"path": "some/teacher"} and again.one_step is False
    data = json.loads(run.manifest_path.read_text())
    assert data["format_version"] == 1 and data["teacher"] == {
        "name": "ddpm-unet",
        "options": {"path": "some/teacher"},
    }
    for broken, message in (
        ("not json", "cannot read"),
        ('{"format_version": 2}', "format_version 2"),
        (json.dumps({**data, "student": {"name": "unet"}}), "needs 'student'"),
        (
            json.dumps({**data, "teacher_spec": {"sample_shape": [1, 8, 8], "colour": 1}}),
            "invalid teacher_spec",
        ),
    ):
        run.manifest_path.write_text(broken)
        with pytest.raises(UserError, match=message):
            _ = Run(run.path).manifest
    with pytest.raises(UserError, match="no run.json"):
        _ = Run(tmp_path).manifest


def test_load_student_round_trip(registry, tmp_path):
    run = make_run(tmp_path / "run", registry)
    student = load_student(run, registry)
    assert class_reference(student) == run.manifest.student_class and not student.training
    (run.student_dir / "config.json").unlink()
    with pytest.raises(UserError, match="did not finish"):
        load_student(Run(run.path), registry)


def test_run_json_cannot_import_an_arbitrary_module(registry, tmp_path, evil_module):
    run = make_run(tmp_path / "run", registry)
    data = json.loads(run.manifest_path.read_text())
    data["student"]["class"] = f"{EVIL}:Net"
    run.manifest_path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="refusing to import"):
        load_student(Run(run.path), registry)
    assert not evil_module.exists() and EVIL not in sys.modules


def test_a_one_step_config_cannot_import_an_arbitrary_backbone(registry, tmp_path, evil_module):
    run = make_run(tmp_path / "run", registry, one_step=True)
    assert isinstance(load_student(run, registry), OneStepGenerator)
    config = json.loads((run.student_dir / "config.json").read_text())
    config["backbone_class"] = f"{EVIL}:Net"
    (run.student_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="refusing to import"):
        load_student(Run(run.path), registry)
    assert not evil_module.exists() and EVIL not in sys.modules


def test_a_pipeline_folder_cannot_import_an_arbitrary_student(registry, tmp_path, evil_module):
    import dkdm_zoo.pipelines  # noqa: F401

    teacher = ddpm_unet_teacher()
    student = registry.create("students", "convnext", teacher.spec, preset="tiny")
    save_pipeline(student, teacher.spec, PipelineComponents(), tmp_path / "pipe")
    assert DiffusionPipeline.from_pretrained(tmp_path / "pipe")(batch_size=2, num_inference_steps=1)
    config = json.loads((tmp_path / "pipe/student/config.json").read_text())
    config["model_class"] = f"{EVIL}:Net"
    (tmp_path / "pipe/student/config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="refusing to import"):
        DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert not evil_module.exists() and EVIL not in sys.modules


def test_run_json_cannot_turn_on_pickle(registry, tmp_path):
    folder = tmp_path / "pickled-teacher"
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(
        folder, safe_serialization=False
    )
    run = make_run(tmp_path / "run", registry, path=str(folder), allow_pickle=True)
    with pytest.raises(UserError, match="pickle"):
        original_teacher(run, registry)
    # the person running the command may opt in; the file never does
    assert original_teacher(run, registry, allow_pickle=True).spec.sample_shape == (1, 8, 8)


def test_registry_is_passed_not_chosen_by_options(registry, tmp_path):
    run = make_run(tmp_path / "run", registry)
    teacher = registry.create("teachers", "run", path=str(run.path))
    assert teacher.spec.family == "run"
    with pytest.raises(UserError, match="unknown key 'teacher.registry' for teacher 'run'"):
        registry.create("teachers", "run", path=str(run.path), registry=build_registry(entry_points=False))
    assert "registry" not in registry.get("teachers", "run").option_defaults()


def test_a_pipeline_that_cannot_be_built_does_not_lose_the_run(registry, tmp_path):
    """A latent teacher that gives no VAE (a plugin family without pipeline_components): the export is
    refused in one line, student/ stays, no half-written pipeline/; `distill` turns it into a warning."""
    from dkdm_zoo.cli.distill import _export
    from dkdm_zoo.config.build import Built
    from dkdm_zoo.export.run import export_run
    from dkdm_zoo.spec import TeacherSpec
    from dkdm_zoo.teachers.spec_only import SpecTeacher

    teacher = SpecTeacher(TeacherSpec(sample_shape=(4, 8, 8), space="latent"))
    student = registry.create("students", "unet", teacher.spec, preset="tiny")
    run = Run(tmp_path / "run")
    recipe = Recipe("r", Component("spec"), Component("unet", {"preset": "tiny"}))
    run.write_manifest(Manifest.of(recipe, teacher.spec, student, False))
    save_student(run, student)
    with pytest.raises(UserError, match="needs its teacher's VAE"):
        export_run(run, registry, student=student, teacher=teacher)
    assert run.finished and not run.pipeline_dir.exists()
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    with pytest.warns(UserWarning, match="needs its teacher's VAE"):
        assert _export(run, registry, Built(recipe, teacher, student, None)) == []
    assert run.finished and not run.pipeline_dir.exists()
