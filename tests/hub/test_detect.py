"""A folder or hub id names its own family, through what each teacher registered (plugins too)."""

from __future__ import annotations

import json
import types

import pytest

from dkdm_zoo.config.resolve import resolve_teacher
from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry, hookimpl
from dkdm_zoo.testing.hub_fixtures import BUILDERS, DDPM_CIFAR10

from .conftest import FAMILIES


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("repo", list(BUILDERS))
def test_folder_and_hub_id_name_their_family(hub, offline_cache, registry, repo):
    for source in (str(hub.folder[repo]), repo):
        ref = resolve_teacher(source, registry)
        assert (ref.name, ref.source) == (FAMILIES[repo], source)
        assert ref.detected == (
            f"teacher {source}: family '{FAMILIES[repo]}' (model_index.json names "
            f"{json.loads((hub.folder[repo] / 'model_index.json').read_text())['_class_name']})"
        )


def test_a_bare_model_folder_and_a_run_folder(hub, tmp_path, registry):
    from dkdm_zoo.testing.tiny_teachers import run_teacher

    folder = tmp_path / "unet-only"
    folder.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        (folder / name).write_bytes((hub.folder[DDPM_CIFAR10] / name).read_bytes())
    assert resolve_teacher(str(folder), registry).name == "ddpm-unet"  # config.json names UNet2DModel
    run_teacher(tmp_path, registry)  # writes a finished run folder, tmp_path/tiny-run
    ref = resolve_teacher(str(tmp_path / "tiny-run"), registry)
    assert ref.name == "run" and "run.json" in ref.detected


def test_family_at_source_wins_and_names_stay_names(hub, registry):
    folder = str(hub.folder[DDPM_CIFAR10])
    ref = resolve_teacher(f"dit@{folder}", registry)
    assert (ref.name, ref.source, ref.detected) == ("dit", folder, None)
    assert resolve_teacher("digits-ddpm", registry).name == "digits-ddpm"
    with pytest.raises(UserError, match="did you mean 'ddpm-unet'"):
        resolve_teacher("ddpm-unt", registry)


def test_an_unknown_pipeline_class_is_one_line_naming_it_and_the_families(tmp_path, registry):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanDiTPipeline"}))
    with pytest.raises(UserError) as exc:
        resolve_teacher(str(tmp_path), registry)
    text = one_line(exc)
    assert "HunyuanDiTPipeline" in text and "ddpm-unet, digits-ddpm" in text and f"FAMILY@{tmp_path}" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no run.json, model_index.json or config.json"):
        resolve_teacher(str(empty), registry)


def _plugin(name: str, accepts: tuple[str, ...]) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def register_teachers(register):
        register(f"{name}-teacher", "dkdm_zoo.teachers.ddpm_unet:load", summary="toy", accepts=accepts)

    module.register_teachers = register_teachers
    return module


def test_a_plugin_family_is_detected_through_the_same_hook(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "ToyPipeline"}))
    registry = build_registry(entry_points=False, extra=[("toy", _plugin("toy", ("ToyPipeline",)))])
    assert resolve_teacher(str(tmp_path), registry).name == "toy-teacher"
    assert registry.describe("teachers", "toy-teacher")["accepts"] == ["ToyPipeline"]
    rival = build_registry(
        entry_points=False,
        extra=[("toy", _plugin("toy", ("ToyPipeline",))), ("rival", _plugin("rival", ("ToyPipeline",)))],
    )
    with pytest.raises(UserError, match=r"several teacher families accept \(rival-teacher, toy-teacher\)"):
        resolve_teacher(str(tmp_path), rival)
    broken = build_registry(entry_points=False, extra=[("bad", _plugin("bad", "ToyPipeline"))])
    assert "accepts must be a sequence" in broken.broken_plugins[0].error
