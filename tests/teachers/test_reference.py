"""The shipped reference digits teachers: load by name, expected specs, safetensors-only small folders,
diffusers' own pipelines agree with the teacher wrappers, and the samples look like digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry
from dkdm_zoo.teachers import reference
from dkdm_zoo.teachers.base import Condition

torch.set_num_threads(1)  # tiny models on a shared CPU

SHIPPED = {
    # name: (conditioning, num_classes, variance_type)
    "digits-ddpm": ("none", None, "fixed_small"),
    "digits-dit": ("class", 10, "learned_range"),
}
MAX_FOLDER_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)


@pytest.fixture(scope="module")
def teachers(registry):
    return {name: registry.create("teachers", name) for name in SHIPPED}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_loads_by_name_with_expected_spec(teachers, name):
    conditioning, num_classes, variance = SHIPPED[name]
    spec = teachers[name].spec
    assert spec.sample_shape == (1, 8, 8) and spec.space == "pixel"
    assert spec.conditioning == conditioning and spec.num_classes == num_classes
    assert spec.variance_type == variance and spec.prediction_type == "epsilon"
    assert spec.num_train_timesteps == 1000 and spec.clip_sample
    assert spec.schedule["beta_schedule"] == "linear"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_predicts_finite_and_samples_right_shape(teachers, name):
    teacher = teachers[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    cond = teacher.sample_conditions(4, gen)
    pred = teacher.predict(x, t, cond)
    assert pred.eps.shape == x.shape and torch.isfinite(pred.eps).all() and torch.isfinite(pred.x0).all()
    assert (pred.var_values is not None) == (SHIPPED[name][2] == "learned_range")
    samples = teacher.sample(3, steps=4, generator=gen)
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()
    assert samples.abs().max() <= 1.0 + 1e-5  # clip_sample keeps DDIM's x0 in range


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_assets_are_small_safetensors_folders(name):
    folder = reference.ASSETS / name
    files = [p for p in folder.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert ".safetensors" in suffixes and (folder / "MODEL_CARD.md").is_file()
    assert not suffixes & {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
    assert sum(p.stat().st_size for p in files) < MAX_FOLDER_BYTES


def test_digits_ddpm_is_a_ddpm_pipeline_that_agrees_with_the_teacher(teachers):
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(reference.ASSETS / "digits-ddpm", use_safetensors=True)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 700])
    with torch.no_grad():
        eps = pipe.unet(x, t).sample
    torch.testing.assert_close(teachers["digits-ddpm"].predict(x, t).eps, eps, rtol=1e-5, atol=1e-5)
    assert pipe.scheduler.config.clip_sample and pipe.scheduler.config.num_train_timesteps == 1000
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 8, 8, 1)


def test_digits_dit_null_label_is_the_unconditional_branch(teachers):
    """Conditions are class labels 0..9; None means DiT's null label 10 (the CFG branch)."""
    teacher = teachers["digits-dit"]
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([100, 600])
    null = teacher.predict(x, t, teacher.null_condition(2), guidance_scale=1.0)
    none = teacher.predict(x, t, None)
    torch.testing.assert_close(null.eps, none.eps)
    with torch.no_grad():
        raw = teacher.transformer(x, timestep=t, class_labels=torch.tensor([10, 10])).sample
    torch.testing.assert_close(null.eps, raw[:, :1])


def test_shipped_teachers_draw_digits(teachers):
    """A quality floor: samples are far from noise (FD ~82) and the DiT draws the class it is asked for."""
    from dkdm_zoo.evaluation import evaluate

    gen = torch.Generator().manual_seed(0)
    ddpm = evaluate(teachers["digits-ddpm"].sample(300, steps=20, generator=gen), "data")
    assert ddpm["fd"] < 25.0
    labels = torch.arange(100) % 10
    dit = teachers["digits-dit"].sample(100, steps=20, cond=Condition(labels=labels), generator=gen)
    assert evaluate(dit, "data", labels=labels)["accuracy"] > 0.6


def test_missing_asset_is_a_one_line_error(monkeypatch, tmp_path: Path, registry):
    monkeypatch.setattr(reference, "ASSETS", tmp_path)
    with pytest.raises(UserError) as info:
        registry.create("teachers", "digits-ddpm")
    message = str(info.value)
    assert "\n" not in message and "python tools/train_reference_teachers.py digits-ddpm" in message


def test_digits_flow_is_a_flat_flow_folder_sampled_by_its_own_scheduler(registry):
    """The shipped rectified-flow teacher: a UNet2DModel and a FlowMatchEuler scheduler at the root;
    dkdm-zoo's sampler is diffusers' own loop over them, and its samples are digits."""
    from dkdm_zoo.evaluation import evaluate
    from tests.teachers.test_schedulers import diffusers_flow_loop

    folder = reference.ASSETS / "digits-flow"
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "scheduler_config.json", "MODEL_CARD.md"} <= files
    assert any(name.endswith(".safetensors") for name in files) and not any(
        name.endswith(".bin") for name in files
    )
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < MAX_FOLDER_BYTES
    teacher = registry.create("teachers", "digits-flow")
    spec = teacher.spec
    assert (spec.process, spec.prediction_type, spec.sample_shape) == ("flow", "flow", (1, 8, 8))
    noise = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    ours = teacher.sample(4, steps=5, noise=noise)
    torch.testing.assert_close(ours, diffusers_flow_loop(folder, noise, 5), rtol=1e-4, atol=1e-4)
    samples = teacher.sample(300, steps=10, generator=torch.Generator().manual_seed(0))
    assert evaluate(samples.clamp(-1, 1), "data")["fd"] < 25.0
