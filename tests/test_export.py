"""Every run exports a pipeline that plain diffusers loads and samples, with a Hub model card.

One tiny run (1 training step through the engine) per teacher family x student kind, plus BOOT;
each pipeline is loaded with diffusers' own classes and samples 2 images. Teachers: a Stable
Diffusion and a latent DiT pipeline saved to folders (tiny, random), the shipped digits-ddpm and
digits-dit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DiTPipeline,
    DiTTransformer2DModel,
)
from huggingface_hub import ModelCard

import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline with diffusers, as the card says
from dkdm_zoo.config import build as builder
from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
from dkdm_zoo.engine import train
from dkdm_zoo.export.card import is_hub_id
from dkdm_zoo.export.run import export_run
from dkdm_zoo.generation.sources import load_source
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Run
from dkdm_zoo.sampling.settings import SamplingSettings
from dkdm_zoo.testing import tiny_teachers as tiny

torch.set_num_threads(1)  # tiny models on a shared CPU

TINY_DKDM = {"rho": 0.001, "pool_init": "ddim", "pool_init_steps": 1}


def save_dit_teacher(folder: Path) -> Path:
    teacher = tiny.dit_teacher()
    scheduler = DDPMScheduler(**tiny.scheduler_config("learned_range", clip_sample=False))
    DiTPipeline(transformer=teacher.transformer, vae=teacher.vae, scheduler=scheduler).save_pretrained(folder)
    return folder


def save_sd_teacher(folder: Path) -> Path:
    from diffusers import StableDiffusionPipeline

    teacher = tiny.latent_sd_teacher()
    scheduler = DDPMScheduler(
        **tiny.scheduler_config(
            clip_sample=False,
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            steps_offset=1,
        )
    )
    StableDiffusionPipeline(
        vae=teacher.vae,
        text_encoder=teacher.text_encoder,
        tokenizer=teacher.tokenizer,
        unet=teacher.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return {
        "dit": {"path": str(save_dit_teacher(root / "dit")), "guidance_scale": 2.0},
        "latent-sd": {"path": str(save_sd_teacher(root / "sd")), "prompts": ["a cat", "a dog"]},
        "digits-ddpm": {},
        "digits-dit": {},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, registry, teachers):
    """run(teacher, student, method) -> the folder of a finished 1-step run (built once per module)."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[tuple[str, str, str], Path] = {}

    def run(teacher: str, student: str, method: str = "dkdm") -> Path:
        key = (teacher, student, method)
        if key not in made:
            recipe = Recipe(
                "-".join(key),
                Component(teacher, dict(teachers[teacher])),
                Component(student, {"preset": "tiny"}),
                Component(method, {"dkdm": dict(TINY_DKDM), "boot": {"num_steps": 4}}.get(method, {})),
                train=TrainConfig(steps=1, batch_size=2, preview_every=0, checkpoint_every=0, log_every=1),
            )
            built = builder.build(recipe, registry)
            out = root / "-".join(key)
            train(recipe, built.teacher, built.student, built.method, Run(out), quiet=True)
            # what `distill` does after training: the pipeline and its card, written once
            export_run(Run(out), registry, student=built.student.eval(), teacher=built.teacher)
            made[key] = out
        return made[key]

    return run


def pipeline_class(run: Path) -> str:
    return json.loads((run / "pipeline/model_index.json").read_text())["_class_name"]


def check_card(run: Path, method: str) -> ModelCard:
    card = ModelCard.load(run / "pipeline/README.md")
    data = card.data
    assert data.library_name == "diffusers"
    assert {"dkdm-zoo", method} <= set(data.tags)
    path = Run(run).manifest.teacher_options.get("path")
    assert data.base_model == (path if is_hub_id(path) else None)  # only a Hub id is a base model
    assert data.pipeline_tag in ("text-to-image", "unconditional-image-generation")
    assert "teacher forwards" in card.text
    # outside the working folder the snippet names the folder, never this machine's absolute path
    assert 'from_pretrained("pipeline")' in card.text
    assert str(run.resolve().parent) not in card.text and "/tmp" not in card.text
    return card


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Stable Diffusion ------------------------------------------------------------------------------------
def test_sd_teacher_unet_student_is_a_stable_diffusion_pipeline(runs):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    run = runs("latent-sd", "unet")
    assert pipeline_class(run) == "StableDiffusionPipeline"
    pipe = StableDiffusionPipeline.from_pretrained(run / "pipeline")
    assert type(pipe.unet) is UNet2DConditionModel  # a plain diffusers class, not the student's subclass
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.num_train_timesteps == tiny.T
    images = pipe(["a cat", "a dog"], num_inference_steps=2, guidance_scale=1.0, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    card = check_card(run, "dkdm")
    assert (
        card.data.pipeline_tag == "text-to-image" and "StableDiffusionPipeline.from_pretrained" in card.text
    )


def test_sd_teacher_dit_student_samples_from_prompts(runs):
    run = runs("latent-sd", "dit")
    assert pipeline_class(run) == "DKDMZooPipeline"
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    images = pipe(
        prompt=["a cat", "a dog"], num_inference_steps=2, output_type="np", generator=seeded()
    ).images
    assert images.shape == (2, 16, 16, 3)
    again = pipe(
        prompt=["a cat", "a dog"], num_inference_steps=2, output_type="np", generator=seeded()
    ).images
    other = pipe(
        prompt=["a dog", "a cat"], num_inference_steps=2, output_type="np", generator=seeded()
    ).images
    assert np.array_equal(images, again) and not np.allclose(images, other)  # the prompt matters
    with pytest.raises(ValueError, match="prompt"):
        pipe(batch_size=2, num_inference_steps=2)
    check_card(run, "dkdm")


# -- latent DiT ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("student", ["unet", "dit"])
def test_dit_teacher_students_sample_as_dkdm_zoo_does(runs, registry, student):
    """The exported pipeline, as loaded, draws the images `dkdm-zoo sample` draws (its DDIM, trailing,
    final alpha 1); the learned variance still drives diffusers' ancestral sampler when swapped in."""
    run = runs("dit", student)
    assert pipeline_class(run) == "DKDMZooPipeline"
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    assert pipe.vae is not None and isinstance(pipe.scheduler, DDIMScheduler)
    # diffusers' DDIM steps from t to t - T / steps: a step count dividing T = 20 keeps its grid ours
    ddim = pipe(class_labels=[1, 3], num_inference_steps=4, generator=seeded(5), output_type="pt").images
    source = load_source(str(run), registry, device="cpu")
    reference, _ = source.generate(
        2, SamplingSettings(steps=4, sampler="ddim", seed=5), labels=[1, 3], progress=False
    )
    torch.testing.assert_close(ddim, (reference + 1) / 2, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="class_labels"):  # no silent garbage from an unlabelled call
        pipe(batch_size=2, num_inference_steps=2)

    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, variance_type="learned_range")
    assert pipe._scheduler_takes_variance()
    images = pipe(class_labels=[1, 3], num_inference_steps=3, generator=seeded(5), output_type="pt").images
    assert images.shape == (2, 3, 16, 16) and not torch.allclose(images, ddim[:, :, :, :])
    check_card(run, "dkdm")


@pytest.mark.parametrize("method", ["boot", "sid"])
def test_one_step_runs_are_one_network_call_per_image(runs, registry, method):
    run = runs("dit", "dit", method)
    assert pipeline_class(run) == "DKDMZooPipeline"
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    calls = []
    pipe.student.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    images = pipe(class_labels=[1, 2], num_inference_steps=50, generator=seeded(0), output_type="pt").images
    assert calls == [2]  # one evaluation for the batch of 2, whatever num_inference_steps says
    assert images.shape == (2, 3, 16, 16)
    reference, _ = load_source(str(run), registry, device="cpu").generate(
        2, SamplingSettings(seed=0), labels=[1, 2], progress=False
    )
    torch.testing.assert_close(images, (reference + 1) / 2, rtol=1e-4, atol=1e-4)
    card = check_card(run, method)
    assert "one-step" in card.data.tags


class DiTContract(DiTTransformer2DModel):
    """A diffusers DiT behind the student contract (plain tensor out)."""

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None):  # type: ignore[override]
        return super().forward(sample, timestep=timestep, class_labels=class_labels).sample


def test_a_diffusers_dit_student_is_exported_as_a_dit_pipeline(tmp_path, teachers, registry):
    from dkdm_zoo.export.folder import save_pipeline

    teacher = registry.create("teachers", "dit", **teachers["dit"])
    torch.manual_seed(0)
    student = DiTContract(**{k: v for k, v in teacher.transformer.config.items() if not k.startswith("_")})
    kind = save_pipeline(student, teacher.spec, teacher.pipeline_components(), tmp_path / "pipe")
    assert kind == "DiTPipeline"
    pipe = DiTPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe.transformer) is DiTTransformer2DModel
    images = pipe(class_labels=[0, 2], num_inference_steps=2, guidance_scale=1.0, output_type="np").images
    assert images.shape == (2, 16, 16, 3)


# -- shipped digits teachers -----------------------------------------------------------------------------
def test_digits_ddpm_unet_student_is_a_ddpm_pipeline(runs):
    run = runs("digits-ddpm", "unet")
    assert pipeline_class(run) == "DDPMPipeline"
    images = DDPMPipeline.from_pretrained(run / "pipeline")(
        batch_size=2, num_inference_steps=2, output_type="np"
    )
    assert images.images.shape == (2, 8, 8, 1)
    check_card(run, "dkdm")


def test_digits_ddpm_convnext_student(runs):
    run = runs("digits-ddpm", "convnext")
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    assert type(pipe).__name__ == "DKDMZooPipeline" and pipe.vae is None
    images = pipe(batch_size=2, num_inference_steps=2, output_type="pil").images
    assert len(images) == 2 and images[0].size == (8, 8) and images[0].mode == "L"
    with pytest.raises(ValueError, match="unconditional"):
        pipe(class_labels=[1], num_inference_steps=2)
    check_card(run, "dkdm")


@pytest.mark.parametrize("student", ["unet", "dit"])
def test_digits_dit_students_take_class_labels(runs, student):
    run = runs("digits-dit", student)
    assert pipeline_class(run) == "DKDMZooPipeline"
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    assert pipe.config.num_classes == 10
    images = pipe(class_labels=[0, 9], num_inference_steps=2, output_type="np", generator=seeded()).images
    assert images.shape == (2, 8, 8, 1)
    if student == "unet":  # (a 1-step DiT is still near its zero-initialised output: labels barely matter)
        guided = pipe(
            class_labels=[0, 9], num_inference_steps=2, output_type="np", generator=seeded(), guidance_scale=3
        )
        assert not np.allclose(images, guided.images)  # classifier-free guidance on top changes the images
    with pytest.raises(ValueError, match=r"0\.\.9"):
        pipe(class_labels=[10], num_inference_steps=2)
    check_card(run, "dkdm")


# -- `dkdm-zoo export` -----------------------------------------------------------------------------------
def export_cli(registry, *args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from dkdm_zoo.cli.app import create_app
    from tests.conftest import strip_ansi

    result = CliRunner().invoke(create_app(registry), ["export", *args])
    return result.exit_code, strip_ansi(result.output)


def test_export_writes_the_pipeline_of_an_older_run(runs, registry, tmp_path):
    """A run made before pipelines existed: export rebuilds the teacher from run.json for its VAE."""
    import shutil

    run = runs("dit", "dit")
    before = DiffusionPipeline.from_pretrained(run / "pipeline")
    expected = before(
        class_labels=[2, 0], num_inference_steps=2, generator=seeded(1), output_type="np"
    ).images
    shutil.rmtree(run / "pipeline")
    code, output = export_cli(registry, str(run), str(tmp_path / "out"))
    assert code == 0, output
    assert "DKDMZooPipeline" in output and not (run / "pipeline").exists()
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "out")
    images = pipe(class_labels=[2, 0], num_inference_steps=2, generator=seeded(1), output_type="np").images
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    assert ModelCard.load(tmp_path / "out/README.md").data.library_name == "diffusers"

    code, output = export_cli(registry, str(run))  # the default place: RUN/pipeline
    assert code == 0 and (run / "pipeline/model_index.json").is_file(), output
    code, output = export_cli(registry, str(run), str(tmp_path / "out"))  # a pipeline folder is replaced
    assert code == 0, output


def test_export_user_errors(runs, registry, tmp_path):
    run = runs("digits-ddpm", "convnext")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    code, output = export_cli(registry, str(run), str(tmp_path / "mine"))
    assert code == 2 and "not a pipeline folder" in output
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"
    code, output = export_cli(registry, str(tmp_path / "mine"))
    assert code == 2 and "not a dkdm-zoo run directory" in output
    code, output = export_cli(registry, str(run), "--push-to-hub", "no id")
    assert code == 2 and "repository id" in output


def test_push_to_hub_offline_is_one_line_after_writing_the_card(runs, registry, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    run = runs("dit", "unet")
    out = tmp_path / "push"
    code, output = export_cli(registry, str(run), str(out), "--push-to-hub", "someone/tiny-student")
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert "--push-to-hub someone/tiny-student" in lines[-1] and "hf auth login" in lines[-1]
    assert len([line for line in lines if "error" in line]) == 1 and "Traceback" not in output
    card = ModelCard.load(out / "README.md")
    assert 'from_pretrained("someone/tiny-student")' in card.text
    assert card.data.base_model is None  # a local teacher folder is no Hub model id
    assert DiffusionPipeline.from_pretrained(out)(
        class_labels=[0, 1], num_inference_steps=2, output_type="np"
    )
