"""`--student teacher` end to end through `distill`: 2 training steps on the shipped digits teachers and on
narrow pipeline folders, resumed bit-equal, exported in the TEACHER's own diffusers pipeline class and
sampled there; one-step methods start from the teacher when no student is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DiTPipeline, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from dkdm_zoo.testing.hub_configs import sd_unet
from tests.conftest import strip_ansi
from tests.test_export import save_dit_teacher, save_sd_teacher

torch.set_num_threads(1)

FAST = [
    "--steps", "2", "--batch-size", "2", "--quiet",
    "--set", "train.preview_every=0", "--set", "train.final_eval_samples=0", "--set", "train.log_every=1",
]  # fmt: skip
TINY_DKDM = [
    "--set",
    "method.pool_init=ddim",
    "--set",
    "method.pool_init_steps=1",
    "--set",
    "method.rho=0.001",
]


def distill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), ["distill", *args])
    return result.exit_code, strip_ansi(result.output)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((run / "student").glob("*.safetensors"))))


def model_index(run: Path) -> dict:
    return json.loads((run / "pipeline/model_index.json").read_text())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teacher-folders")
    sd = save_sd_teacher(root / "sd")
    # stable-diffusion-v1-5's UNet layout (two resnets per down stage, narrow widths) for the BK presets
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(
        dict(sd_unet("narrow"), layers_per_block=2, cross_attention_dim=16)
    )
    unet.save_pretrained(sd / "unet", safe_serialization=True)
    return {"dit": save_dit_teacher(root / "dit"), "sd": sd}


def test_digits_ddpm_copy_trains_exports_a_ddpm_pipeline_and_samples(tmp_path):
    code, out = distill(
        "--teacher", "digits-ddpm", "--student", "teacher", "--out", str(tmp_path), *FAST, *TINY_DKDM
    )
    assert code == 0, out
    assert "student 'teacher' (full): copied 182 of 182 tensors from the teacher's UNet2DModel" in out
    manifest = json.loads((tmp_path / "run.json").read_text())["student"]
    assert (
        manifest["class"] == "dkdm_zoo.students.teacher_net:TeacherNetwork" and manifest["preset"] == "full"
    )
    assert manifest["config"]["network_class"] == "diffusers.models.unets.unet_2d:UNet2DModel"
    assert model_index(tmp_path)["_class_name"] == "DDPMPipeline"
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.scheduler.config.prediction_type == "epsilon"
    images = pipe(
        batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    assert images.images.shape == (2, 8, 8, 1)


def test_one_step_methods_start_from_the_teacher_and_resume_bit_equal(tmp_path):
    common = ["--teacher", "digits-dit", "--method", "sid", "--set", "train.checkpoint_every=1"]
    code, out = distill(*common, "--out", str(tmp_path / "solo"), *FAST)
    assert code == 0, out
    assert "copied 82 of 82 tensors" in out
    manifest = json.loads((tmp_path / "solo/run.json").read_text())
    assert manifest["student"]["name"] == "teacher" and manifest["one_step"] is True
    cut = [*common, "--out", str(tmp_path / "cut"), *FAST]
    cut[cut.index("--steps") + 1] = "1"
    assert distill(*cut)[0] == 0
    code, out = distill(*common, "--out", str(tmp_path / "cut"), *FAST, "--resume")
    assert code == 0, out
    solo, resumed = weights(tmp_path / "solo"), weights(tmp_path / "cut")
    assert solo.keys() == resumed.keys() and all(torch.equal(solo[k], resumed[k]) for k in solo)


def test_latent_dit_copy_exports_a_dit_pipeline(tmp_path, folders):
    code, out = distill(
        "--teacher",
        f"dit@{folders['dit']}",
        "--student",
        "teacher",
        "--out",
        str(tmp_path),
        *FAST,
        *TINY_DKDM,
    )
    assert code == 0, out
    assert model_index(tmp_path)["_class_name"] == "DiTPipeline"
    pipe = DiTPipeline.from_pretrained(tmp_path / "pipeline")
    # guidance 1: DiTPipeline's null label is 1000 (ImageNet's), the narrow DiT has 4 classes
    images = pipe(class_labels=[0, 3], num_inference_steps=2, guidance_scale=1.0, output_type="np")
    assert images.images.shape[0] == 2


def test_a_bk_small_sd_student_is_a_stable_diffusion_pipeline(tmp_path, folders):
    prompts = '--set=teacher.prompts=["a cat", "a dog"]'
    args = [
        "--teacher",
        f"latent-sd@{folders['sd']}",
        "--student",
        "teacher",
        "--preset",
        "bk-small",
        prompts,
    ]
    code, out = distill(*args, "--out", str(tmp_path), *FAST, *TINY_DKDM)
    assert code == 0, out
    assert "student 'teacher' (bk-small): copied" in out
    config = json.loads((tmp_path / "run.json").read_text())["student"]["config"]
    assert (
        config["network_config"]["mid_block_type"] is None
        and config["network_config"]["layers_per_block"] == 1
    )
    assert model_index(tmp_path)["_class_name"] == "StableDiffusionPipeline"
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.unet.mid_block is None
    image = pipe("a cat", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3)


def test_a_flow_teacher_copy_keeps_its_velocity(tmp_path):
    code, out = distill(
        "--teacher", "digits-flow", "--student", "teacher", "--out", str(tmp_path), *FAST, *TINY_DKDM
    )
    assert code == 0, out
    config = json.loads((tmp_path / "run.json").read_text())["student"]["config"]
    assert config["prediction_type"] == "flow"


def test_a_mismatched_parameterisation_is_one_line(tmp_path):
    code, out = distill("--teacher", "digits-flow", "--student", "teacher", "--set", "student.prediction_type=epsilon",
                        "--out", str(tmp_path), *FAST)  # fmt: skip
    assert code == 2
    assert "student.prediction_type 'epsilon' does not fit the flow teacher" in out
    assert "Traceback" not in out


# -- LoRA ---------------------------------------------------------------------------------------------------
def test_sd_lora_keeps_only_adapters_resumes_and_loads_with_load_lora_weights(tmp_path, folders):
    """DKDM of the guided teacher into LoRA adapters (guidance distillation); the base is never saved."""
    args = ["--teacher", f"latent-sd@{folders['sd']}", "--lora", "4", '--set=teacher.prompts=["a cat", "a dog"]',
            "--set", "train.lr=0.01", "--set", "train.checkpoint_every=1", *TINY_DKDM]  # fmt: skip
    code, out = distill(*args, "--out", str(tmp_path / "solo"), *FAST)
    assert code == 0, out
    assert "LoRA rank 4 on the teacher's UNet2DConditionModel (shared, frozen)" in out
    for file in (
        tmp_path / "solo/checkpoints/checkpoint-0000002/student.safetensors",
        next((tmp_path / "solo/student").glob("*.safetensors")),
    ):
        keys = load_file(str(file)).keys()
        assert keys and all("lora_" in k for k in keys), file
    cut = [*args, "--out", str(tmp_path / "cut"), *FAST]
    cut[cut.index("--steps") + 1] = "1"
    assert distill(*cut)[0] == 0
    assert distill(*args, "--out", str(tmp_path / "cut"), *FAST, "--resume")[0] == 0
    solo, resumed = weights(tmp_path / "solo"), weights(tmp_path / "cut")
    assert solo.keys() == resumed.keys() and all(torch.equal(solo[k], resumed[k]) for k in solo)
    assert any(v.abs().sum() > 0 for k, v in solo.items() if "lora_B" in k)  # the adapters trained

    # the end-of-run export is the adapters alone (tests/export/test_lora_export.py: the whole pipeline)
    assert not (tmp_path / "solo/pipeline/model_index.json").exists()
    assert 'pipe.load_lora_weights("' in (tmp_path / "solo/pipeline/README.md").read_text()
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)),
        ["export", str(tmp_path / "solo"), str(tmp_path / "merged"), "--merge"],
    )
    assert result.exit_code == 0, result.output
    merged = StableDiffusionPipeline.from_pretrained(tmp_path / "merged")
    adapted = StableDiffusionPipeline.from_pretrained(folders["sd"])  # the teacher's own pipeline
    adapted.load_lora_weights(tmp_path / "solo/pipeline")
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([3, 15]), torch.randn(2, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            adapted.unet(x, t, text).sample, merged.unet(x, t, text).sample, rtol=1e-4, atol=1e-5
        )


def test_sid_lora_fake_score_is_adapters_too_and_the_plan_says_so(tmp_path):
    code, out = distill("--teacher", "digits-ddpm", "--method", "sid", "--lora", "2", "--out", str(tmp_path), *FAST,
                        "--set", "train.checkpoint_every=2")  # fmt: skip
    assert code == 0, out
    fake = load_file(str(tmp_path / "checkpoints/checkpoint-0000002/fake_score.safetensors"))
    assert fake and all("lora_" in k for k in fake)
    assert model_index(tmp_path)["_class_name"] == "DKDMZooPipeline"  # merged: one-step generators
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)),
        ["distill", "--teacher", "digits-ddpm", "--method", "sid", "--lora", "2", "--dry-run", "--json"],
    )
    plan = json.loads(result.stdout)
    details = plan["details"]
    # the generator's and the fake score's frozen base are both the teacher's own tensors: nothing new
    assert (
        details["frozen_parameters"]
        == details["frozen_shared_with_teacher"]
        == 2 * plan["parameters"]["teacher"]
    )
    assert details["trainable_parameters"] == 2 * 4096  # rank 2 adapters on the generator and the fake score


def test_an_older_lora_run_exports_again_from_its_folder(tmp_path):
    code, out = distill(
        "--teacher",
        "digits-ddpm",
        "--lora",
        "2",
        "--set",
        "train.lr=0.01",
        "--out",
        str(tmp_path / "run"),
        *FAST,
        *TINY_DKDM,
    )
    assert code == 0, out
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)),
        ["export", str(tmp_path / "run"), str(tmp_path / "again")],
    )
    assert result.exit_code == 0, result.output
    # DDPMPipeline loads no LoRA: merged weights, said in one line and in the card
    assert (
        "DDPMPipeline loads no LoRA, so the LoRA student is exported with its adapters merged"
        in result.output
    )
    assert "`DDPMPipeline` loads no LoRA" in (tmp_path / "again/README.md").read_text()
    first = DDPMPipeline.from_pretrained(tmp_path / "run/pipeline").unet.state_dict()
    again = DDPMPipeline.from_pretrained(tmp_path / "again").unet.state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_info_builds_the_teacher_student_for_a_teacher():
    app = create_app(build_registry(entry_points=False))
    result = CliRunner().invoke(app, ["info", "teacher", "--teacher", "digits-ddpm", "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)["built_for_teacher"]
    assert built["preset"] == "full" and built["parameters"] == 1_112_801  # the digits-ddpm UNet itself
    assert built["class"] == "dkdm_zoo.students.teacher_net.TeacherNetwork"
    result = CliRunner().invoke(app, ["info", "unet", "--teacher", "digits-ddpm", "--json"])
    assert json.loads(result.stdout)["built_for_teacher"]["preset"] == "small"  # the built-ins' default
