"""generation.load_source / ImageSource and evaluation.report on tiny teachers and tiny trained runs.

The helpers here (tiny teacher folders, tiny runs through `dkdm-zoo distill`) are shared with
tests/cli/test_sample_eval.py.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler
from rich.console import Console
from typer.testing import CliRunner

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.evaluation.report import evaluate_source, final_report, metrics_table, per_class_table
from dkdm_zoo.generation.sources import load_source
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Run
from dkdm_zoo.sampling.settings import SamplingSettings
from tests.methods.tiny import scheduler_config
from tests.methods.tiny import tiny_unet as tiny_unet_1ch

torch.set_num_threads(1)  # tiny models on a shared CPU


# -- shared helpers ------------------------------------------------------------------------------------
def save_teacher(folder: Path, *, num_classes: int | None = None, channels: int = 1, seed: int = 0) -> Path:
    """A tiny `ddpm-unet` teacher folder (8x8, T = 20, clipped), loadable as ddpm-unet@folder."""
    from diffusers import UNet2DModel

    if channels == 1:
        unet = tiny_unet_1ch(num_classes=num_classes, seed=seed)
    else:
        torch.manual_seed(seed)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=(16, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(folder)
    return folder


def distill_run(out: Path, teacher_dir: Path, method: str, *extra: str) -> Path:
    """A tiny finished run through the real `distill` command (the engine writes run.json, student/)."""
    from dkdm_zoo.cli.app import create_app

    args = [
        "distill",
        "--teacher",
        f"ddpm-unet@{teacher_dir}",
        "--student",
        "unet",
        "--preset",
        "tiny",
        "--method",
        method,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--set",
        "train.preview_every=0",
        "--set",
        "train.checkpoint_every=0",
        "--quiet",
        *(["--set", "method.dataset=digits"] if method == "data" else []),
        *extra,
    ]
    result = CliRunner().invoke(create_app(build_registry()), args)
    assert result.exit_code == 0, result.output
    return out


class CallCounter:
    """Counts forward calls of a module (a forward hook: the real module runs)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry():
    return build_registry()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def class_teacher_dir(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("class-teacher"), num_classes=3)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory, teacher_dir):
    return distill_run(tmp_path_factory.mktemp("runs") / "data", teacher_dir, "data")


@pytest.fixture(scope="module")
def boot_run(tmp_path_factory, teacher_dir):
    return distill_run(tmp_path_factory.mktemp("runs") / "boot", teacher_dir, "boot")


# -- teachers -------------------------------------------------------------------------------------------
def test_teacher_source_equals_its_sampler_on_the_seeded_noise(registry, teacher_dir):
    source = load_source(f"ddpm-unet@{teacher_dir}", registry, device="cpu")
    assert source.name == "ddpm-unet" and not source.one_step and not source.is_run
    images, labels = source.generate(5, SamplingSettings(steps=4, seed=3, batch_size=2), progress=False)
    assert labels is None and images.shape == (5, 1, 8, 8)
    # the reference: one teacher.sample call over the same initial noise (DDIM is deterministic)
    noise = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    reference = source.teacher.sample(5, steps=4, sampler="ddim", noise=noise).clamp(-1, 1)
    torch.testing.assert_close(images, reference, rtol=1e-5, atol=1e-5)
    assert images.std() > 0.05


def test_same_seed_same_images_for_both_samplers(registry, teacher_dir):
    source = load_source("ddpm-unet", registry, teacher_options={"path": str(teacher_dir)}, device="cpu")
    for sampler in ("ddim", "ddpm"):
        a, _ = source.generate(4, SamplingSettings(steps=3, sampler=sampler, seed=1), progress=False)
        b, _ = source.generate(4, SamplingSettings(steps=3, sampler=sampler, seed=1), progress=False)
        c, _ = source.generate(4, SamplingSettings(steps=3, sampler=sampler, seed=2), progress=False)
        assert torch.equal(a, b)
        assert (a - c).abs().max() > 1e-3
    ddim, _ = source.generate(4, SamplingSettings(steps=3, sampler="ddim", seed=1), progress=False)
    ddpm, _ = source.generate(4, SamplingSettings(steps=3, sampler="ddpm", seed=1), progress=False)
    assert (ddim - ddpm).abs().max() > 1e-3  # the ancestral sampler adds noise


def test_class_labels_balanced_cycled_and_checked(registry, class_teacher_dir, teacher_dir):
    source = load_source(f"ddpm-unet@{class_teacher_dir}", registry, device="cpu")
    _, labels = source.generate(7, SamplingSettings(steps=2), labels="all", progress=False)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    _, labels = source.generate(4, SamplingSettings(steps=2), labels=[2, 1], progress=False)
    assert labels.tolist() == [2, 1, 2, 1]
    _, random_labels = source.generate(
        6, SamplingSettings(steps=2, seed=0), progress=False
    )  # random, but seeded
    _, again = source.generate(6, SamplingSettings(steps=2, seed=0), progress=False)
    assert torch.equal(random_labels, again) and set(random_labels.tolist()) <= {0, 1, 2}
    with pytest.raises(UserError, match=r"0\.\.2"):
        source.generate(2, SamplingSettings(steps=2), labels=[3], progress=False)
    with pytest.raises(UserError, match="no text prompt"):
        source.generate(2, SamplingSettings(steps=2), prompts=["a cat"], progress=False)
    unconditional = load_source(f"ddpm-unet@{teacher_dir}", registry, device="cpu")
    for labels in ([1], "all"):
        with pytest.raises(UserError, match="takes no class labels"):
            unconditional.generate(2, SamplingSettings(steps=2), labels=labels, progress=False)


def test_load_source_errors(registry, tmp_path):
    with pytest.raises(UnknownNameError, match="ddpm-unet"):
        load_source("ddpm-unett", registry)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="no run.json"):
        load_source(str(tmp_path / "folder"), registry)
    with pytest.raises(UserError, match="no network"):
        load_source("spec", registry)


# -- runs -----------------------------------------------------------------------------------------------
def test_multi_step_run_equals_diffusers_ddim_on_the_exported_pipeline(registry, data_run):
    """The run source samples its student on the teacher's schedule: same images as diffusers' DDIM loop
    over the engine's exported DDPMPipeline (trailing spacing, final alpha 1, clipped x0)."""
    source = load_source(str(data_run), registry, device="cpu")
    assert source.is_run and not source.one_step and source.spec.num_train_timesteps == 20
    steps = 5
    images, _ = source.generate(3, SamplingSettings(steps=steps, seed=4), progress=False)

    pipe = DDPMPipeline.from_pretrained(data_run / "pipeline", use_safetensors=True)
    scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True
    )
    scheduler.set_timesteps(steps)
    x = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = pipe.unet(x, t).sample
            x = scheduler.step(eps, t, x, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(images, x.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_one_step_run_calls_the_generator_once_per_batch(registry, boot_run):
    source = load_source(str(boot_run), registry, device="cpu")
    assert source.one_step and source.nfe_per_image(50) == 1
    counter = CallCounter(source.generator.backbone)
    images, labels = source.generate(5, SamplingSettings(steps=50, batch_size=2, seed=0), progress=False)
    assert counter.calls == 3  # ceil(5 / 2) batches, one evaluation each, whatever --steps says
    noise = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = source.generator(noise, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(images, direct.clamp(-1, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="one-step"):
        source.generate(2, SamplingSettings(guidance_scale=3.0), progress=False)


# -- evaluation -----------------------------------------------------------------------------------------
def test_evaluate_source_per_class_and_against_teacher(registry, class_teacher_dir, data_run):
    source = load_source(f"ddpm-unet@{class_teacher_dir}", registry, device="cpu")
    result = evaluate_source(source, "data", 12, SamplingSettings(steps=2, seed=0), progress=False)
    metrics = result["metrics"]
    assert set(metrics["per_class_accuracy"]) == {0, 1, 2}  # balanced labels 0..K-1
    assert all(math.isfinite(metrics[k]) for k in ("fd", "precision", "recall", "accuracy"))
    assert result["n"] == 12 and result["nfe_per_image"] == 2
    itself = evaluate_source(
        source, "teacher", 12, SamplingSettings(steps=2), teacher_steps=3, registry=registry, progress=False
    )
    assert itself["teacher"]["name"] == source.name and itself["teacher"]["nfe_per_image"] == 3

    run = load_source(str(data_run), registry, device="cpu")
    result = evaluate_source(
        run,
        "teacher",
        10,
        SamplingSettings(steps=2, seed=0),
        teacher_steps=3,
        registry=registry,
        progress=False,
    )
    assert result["teacher"]["name"] == "ddpm-unet" and result["teacher"]["nfe_per_image"] == 3
    assert result["metrics"]["n_reference"] == 10
    assert all(math.isfinite(result["metrics"][k]) for k in ("fd", "precision", "recall"))


def test_three_channel_sources_are_refused_by_the_digit_evaluator(registry, tmp_path):
    source = load_source(f"ddpm-unet@{save_teacher(tmp_path / 'rgb', channels=3)}", registry, device="cpu")
    with pytest.raises(UserError, match="fid_inception"):
        evaluate_source(source, "data", 8, SamplingSettings(steps=1))


def test_metrics_table_puts_models_side_by_side():
    rows = {
        "teacher": {
            "nfe_per_image": 50,
            "s_per_image": 0.01,
            "metrics": {"fd": 1.5, "precision": 0.9, "recall": 0.8},
        },
        "student": {"nfe_per_image": 1, "metrics": {"fd": 2.25, "precision": 0.7, "recall": 0.6}},
    }
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(metrics_table(rows))
    lines = out.getvalue().splitlines()
    assert any("FD" in line and "precision" in line and "accuracy" not in line for line in lines)
    assert any("teacher" in line and "1.500" in line and "50" in line for line in lines)
    assert any("student" in line and "2.250" in line and "0.700" in line for line in lines)
    assert per_class_table(rows) is None
    rows["student"]["metrics"]["per_class_accuracy"] = {0: 1.0, 1: 0.5}
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(per_class_table(rows))
    assert any(
        "student" in line and "1.00" in line and "0.50" in line for line in out.getvalue().splitlines()
    )


def test_final_report_scores_student_and_teacher(registry, data_run, tmp_path):
    out = io.StringIO()
    report = final_report(
        Run(data_run),
        16,
        seed=0,
        steps=3,
        registry=registry,
        console=Console(file=out, width=200, color_system=None),
    )
    saved = json.loads((data_run / "eval.json").read_text())
    assert set(saved["models"]) == {"student", "teacher (ddpm-unet)"} == set(report["models"])
    for model in saved["models"].values():
        assert all(math.isfinite(model["metrics"][k]) for k in ("fd", "precision", "recall"))
    # the teacher's reference sampler: 50 DDIM steps, capped by this tiny schedule's T = 20
    assert saved["models"]["teacher (ddpm-unet)"]["nfe_per_image"] == 20
    assert saved["models"]["student"]["nfe_per_image"] == 3
    assert "student" in out.getvalue() and "teacher (ddpm-unet)" in out.getvalue()
    from PIL import Image

    assert Image.open(data_run / "samples.png").size == (
        4 * 10 + 2,
        4 * 10 + 2,
    )  # 16 images of 8x8, padding 2
