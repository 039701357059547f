"""Loading helpers: layouts, teacher references and the errors a user sees, on real folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dkdm_zoo.errors import UserError
from dkdm_zoo.teachers import ddpm_unet
from dkdm_zoo.teachers.loading import (
    find_model_folder,
    load_scheduler_config,
    parse_dtype,
    resolve_source,
)
from dkdm_zoo.teachers.sources import is_hub_id

from .tiny import ddpm_scheduler, save_model_folder, save_pipeline, tiny_unet

REPO = Path(__file__).resolve().parents[2]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_split_teacher_shorthand():
    from dkdm_zoo.config.resolve import split_teacher

    assert split_teacher("ddpm-unet@google/ddpm-cifar10-32") == ("ddpm-unet", "google/ddpm-cifar10-32")
    assert split_teacher(" dit ") == ("dit", None)
    assert split_teacher("run@runs/a@b") == ("run", "runs/a@b")  # only the first '@' splits
    for bad in ("", "@x", "ddpm-unet@"):
        with pytest.raises(UserError):
            split_teacher(bad)


def test_parse_dtype():
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype"):
        parse_dtype("float8")


def test_missing_local_path_that_is_not_a_hub_id(tmp_path):
    missing = tmp_path / "nope" / "teacher"
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path=str(missing))
    assert str(missing) in _one_line(exc) and "does not exist" in str(exc.value)
    assert is_hub_id("google/ddpm-cifar10-32")
    with pytest.raises(UserError):
        resolve_source("./google/ddpm")  # explicit relative path: never a hub id


def test_folder_that_is_not_a_diffusers_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path=str(tmp_path))
    assert "not a diffusers model" in _one_line(exc) and str(tmp_path) in str(exc.value)
    with pytest.raises(UserError, match="is a file"):
        ddpm_unet.load(path=str(tmp_path / "notes.txt"))


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_unet(), ddpm_scheduler())
    weights = folder / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), folder / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path=str(folder))
    assert "pickle" in _one_line(exc) and "allow_pickle" in str(exc.value) and str(folder) in str(exc.value)
    teacher = ddpm_unet.load(path=str(folder), allow_pickle=True)
    ref = tiny_unet()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 500])
    torch.testing.assert_close(teacher.model_output(x, t, None), ref(x, t).sample)


def test_weightless_model_folder(tmp_path):
    folder = save_model_folder(tmp_path / "m", tiny_unet(), ddpm_scheduler())
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights"):
        ddpm_unet.load(path=str(folder))


def test_missing_scheduler_config(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "m")
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path=str(tmp_path / "m"))
    assert "no scheduler config" in _one_line(exc)


def test_layouts_find_model_and_scheduler(tmp_path):
    unet, scheduler = tiny_unet(), ddpm_scheduler(beta_schedule="squaredcos_cap_v2")
    save_pipeline(tmp_path / "pipe", unet, scheduler)
    save_model_folder(tmp_path / "model", unet, scheduler)
    for path, sub in (
        (tmp_path / "pipe", "unet"),
        (tmp_path / "model", None),
        (tmp_path / "pipe" / "unet", None),
    ):
        source = resolve_source(path)
        assert find_model_folder(source, ("unet",)) == sub
        # pipe/unet alone: the scheduler is found in ../scheduler
        assert load_scheduler_config(source, sub)["beta_schedule"] == "squaredcos_cap_v2"
    with pytest.raises(UserError, match="transformer/"):
        find_model_folder(resolve_source(tmp_path / "pipe"), ("transformer",))


def test_wrong_model_class_is_refused(tmp_path):
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8).save_pretrained(tmp_path / "vae")
    ddpm_scheduler().save_pretrained(tmp_path / "vae")
    with pytest.raises(UserError, match="not a UNet2DModel"):
        ddpm_unet.load(path=str(tmp_path / "vae"))


def test_hub_id_offline_and_not_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path="someone/not-cached-model")
    text = _one_line(exc)
    assert "someone/not-cached-model" in text and "not in the local Hugging Face cache" in text
    assert (
        "HF_HUB_CACHE" in text and "local diffusers folder" in text and str(tmp_path / "empty-cache") in text
    )


def test_hub_id_from_the_cache_offline(tmp_path):
    """A hub id that is in the HF cache loads with HF_HUB_OFFLINE=1 (fresh process: env read at import)."""
    snapshot = tmp_path / "hub" / "models--org--tiny-ddpm" / "snapshots" / ("a" * 40)
    save_pipeline(snapshot, tiny_unet(seed=3), ddpm_scheduler())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    code = (
        "import torch, json\n"
        "from dkdm_zoo.teachers.ddpm_unet import load\n"
        "t = load(path='org/tiny-ddpm')\n"
        "print(json.dumps({'shape': list(t.spec.sample_shape), 'sum': float(sum(p.sum() for p in t.unet.parameters()))}))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [3, 8, 8]
    expected = float(sum(p.detach().sum() for p in tiny_unet(seed=3).parameters()))
    assert abs(result["sum"] - expected) < 1e-3
