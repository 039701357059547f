"""Every layout users download loads: flat and pipeline folders, hub ids from the HF cache, old configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dkdm_zoo.errors import UserError
from dkdm_zoo.teachers import ddpm_unet, dit, latent_sd
from dkdm_zoo.testing import hub_configs
from dkdm_zoo.testing.hub_fixtures import (
    DDPM_CIFAR10,
    DIT_XL_2_256,
    SD_V1_5,
    build_ddpm_cifar10,
    write_hub_cache,
)

PROMPTS = ["a cat sitting on a chair", "a red fox in the snow"]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def assert_weights_from(module: torch.nn.Module, weights: Path) -> None:
    """The module holds the file's tensors (loaded, not freshly initialised)."""
    saved = load_file(weights)
    state = module.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name].float(), tensor.float(), msg=name)


def test_the_fixtures_keep_the_real_repositories_files(hub):
    ddpm = hub.folder[DDPM_CIFAR10]
    assert sorted(p.name for p in ddpm.iterdir()) == [  # flat: nothing in unet/ or scheduler/
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "model_index.json",
        "scheduler_config.json",
    ]
    narrow = json.loads((ddpm / "config.json").read_text())
    assert narrow.keys() == hub_configs.ddpm_cifar10_unet("full").keys()
    assert narrow["_diffusers_version"] == "0.0.4" and "prediction_type" not in json.loads(
        (ddpm / "scheduler_config.json").read_text()
    )
    dit_config = json.loads((hub.folder[DIT_XL_2_256] / "transformer" / "config.json").read_text())
    assert dit_config["_class_name"] == "Transformer2DModel"
    index = json.loads((hub.folder[SD_V1_5] / "model_index.json").read_text())
    assert {"safety_checker", "feature_extractor"} <= index.keys()
    assert not list((hub.folder[SD_V1_5] / "safety_checker").glob("*.safetensors"))  # never needed
    snapshot = hub.snapshot[DDPM_CIFAR10]
    assert (snapshot / "config.json").is_symlink()
    assert (snapshot.parents[1] / "refs" / "main").read_text() == snapshot.name


def test_flat_ddpm_repository_by_folder(hub):
    folder = hub.folder[DDPM_CIFAR10]
    teacher = ddpm_unet.load(path=str(folder))
    spec = teacher.spec
    assert spec.sample_shape == (3, 32, 32) and spec.space == "pixel" and spec.num_train_timesteps == 1000
    assert spec.variance_type == "fixed_large" and spec.clip_sample and spec.prediction_type == "epsilon"
    assert spec.schedule == {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
    assert_weights_from(teacher.unet, folder / "diffusion_pytorch_model.safetensors")


def test_dit_saved_as_transformer2dmodel_by_hub_id(hub, offline_cache):
    teacher = dit.load(path=DIT_XL_2_256)
    spec = teacher.spec
    assert spec.space == "latent" and spec.sample_shape == (4, 8, 8) and spec.image_shape == (3, 64, 64)
    assert spec.variance_type == "learned_range" and spec.num_classes == 1000
    snapshot = hub.snapshot[DIT_XL_2_256]
    assert_weights_from(teacher.transformer, snapshot / "transformer" / "diffusion_pytorch_model.safetensors")
    assert_weights_from(teacher.vae, snapshot / "vae" / "diffusion_pytorch_model.safetensors")


def test_stable_diffusion_by_hub_id_ignores_what_it_does_not_need(hub, offline_cache):
    teacher = latent_sd.load(path=SD_V1_5, prompts=PROMPTS)
    spec = teacher.spec
    assert spec.conditioning == "text" and spec.text_seq_len == 77 and spec.text_embed_dim == 32
    assert spec.schedule["beta_schedule"] == "scaled_linear" and spec.prediction_type == "epsilon"
    snapshot = hub.snapshot[SD_V1_5]
    assert_weights_from(teacher.unet, snapshot / "unet" / "diffusion_pytorch_model.safetensors")
    assert_weights_from(teacher.text_encoder, snapshot / "text_encoder" / "model.safetensors")
    # the fixture's BPE tokenizer splits the corpus into merged pieces, CLIP-style
    tokens = teacher.tokenizer.tokenize("a photograph of an astronaut")
    assert tokens[0] == "a</w>" and "astronaut</w>" in tokens


def _partial_cache(hub, tmp_path: Path, repo: str, drop: str) -> Path:
    """A cache whose snapshot of ``repo`` lacks ``drop`` (an interrupted or filtered download)."""
    folder = tmp_path / "partial"
    shutil.copytree(hub.folder[repo], folder)
    target = folder / drop
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    cache = tmp_path / "cache"
    write_hub_cache(cache, repo, folder)
    return cache


def test_a_file_the_snapshot_lacks_is_missing_not_uncached(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = _partial_cache(hub, tmp_path, SD_V1_5, "vae/diffusion_pytorch_model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(UserError) as exc:
        latent_sd.load(path=SD_V1_5, prompts=PROMPTS)
    text = one_line(exc)
    assert "not in the local Hugging Face cache" not in text
    assert "no weights" in text and str(cache) in text and "/vae" in text


def test_a_missing_component_names_the_file_and_the_folder(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = _partial_cache(hub, tmp_path, SD_V1_5, "text_encoder")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(UserError) as exc:
        latent_sd.load(path=SD_V1_5, prompts=PROMPTS)
    text = one_line(exc)
    assert "text_encoder/config.json" in text and f"{cache}" in text and "not in the local" not in text


def test_a_repository_absent_from_the_cache_is_not_cached(hub, offline_cache):
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path="google/ddpm-celebahq-256")
    text = one_line(exc)
    assert "not in the local Hugging Face cache" in text and str(offline_cache) in text


def test_pickle_only_repository_names_allow_pickle_and_the_cli_form(tmp_path):
    folder = build_ddpm_cifar10(tmp_path / "old", safetensors=False, pickle=True)
    with pytest.raises(UserError) as exc:
        ddpm_unet.load(path=str(folder))
    text = one_line(exc)
    assert "diffusion_pytorch_model.bin" in text and "--set teacher.allow_pickle=true" in text
    teacher = ddpm_unet.load(path=str(folder), allow_pickle=True)
    saved = torch.load(folder / "diffusion_pytorch_model.bin", weights_only=True)
    torch.testing.assert_close(teacher.unet.state_dict()["conv_in.weight"], saved["conv_in.weight"])


def test_legacy_predict_epsilon_key(hub, tmp_path):
    folder = tmp_path / "x0"
    shutil.copytree(hub.folder[DDPM_CIFAR10], folder)
    config = json.loads((folder / "scheduler_config.json").read_text())
    (folder / "scheduler_config.json").write_text(json.dumps({**config, "predict_epsilon": False}))
    assert ddpm_unet.load(path=str(folder)).spec.prediction_type == "sample"


def test_a_transformer2dmodel_that_is_no_dit_is_refused(hub, tmp_path):
    folder = tmp_path / "pixart"
    shutil.copytree(hub.folder[DIT_XL_2_256], folder)
    path = folder / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "norm_type": "ada_norm_single"}))
    with pytest.raises(UserError, match="not a DiT"):
        dit.load(path=str(folder))
