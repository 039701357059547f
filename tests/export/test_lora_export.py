"""A LoRA student exported as a diffusers LoRA: `dkdm-zoo export RUN OUT` (and the end of `distill`)
writes the adapters, the scheduler and the card and no full network weights; the teacher's own stock
pipeline with `load_lora_weights` and that scheduler samples the images of the merged pipeline
`--merge` writes (same seed), on the narrow SD 1.5 copy (multi-step DKDM) and on the narrow SDXL copy
(a one-step SiD generator: Euler at the generator's timestep). `dkdm-zoo sample` still samples the run."""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from dkdm_zoo.testing.sdxl_fixtures import build_sdxl
from tests.conftest import strip_ansi
from tests.export.test_stock_pipelines import DKDM, FAST, PROMPTS, card_arguments, stock_latents
from tests.test_export import save_sd_teacher

torch.set_num_threads(1)


def cli(*args: str) -> str:
    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), list(args))
    assert result.exit_code == 0, strip_ansi(result.output)
    return strip_ansi(result.output)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora-teachers")
    return {"sd": save_sd_teacher(root / "sd"), "sdxl": build_sdxl(root / "sdxl")}


def assert_adapters_only(folder: Path, kind: str) -> dict[str, torch.Tensor]:
    """The export holds the adapters (and only them as weights), its scheduler, the class and the card."""
    assert not (folder / "model_index.json").exists()
    assert [p.name for p in folder.rglob("*.safetensors")] == ["pytorch_lora_weights.safetensors"]
    assert json.loads((folder / "lora_pipeline.json").read_text())["_class_name"] == kind
    assert (folder / "scheduler/scheduler_config.json").is_file()
    lora = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    assert lora and all("lora_" in k for k in lora)
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)  # trained: lora_B starts at 0
    card = (folder / "README.md").read_text()
    assert f"pipe = {kind}.from_pretrained(" in card and f'pipe.load_lora_weights("{folder.name}")' in card
    assert "`dkdm-zoo export RUN OUT --merge`" in card
    return lora


def test_an_sd_lora_exports_its_adapters_which_sample_the_merged_pipelines_images(teachers, tmp_path):
    run, out, merged_folder = tmp_path / "run", tmp_path / "adapters", tmp_path / "merged"
    cli("distill", "--teacher", f"latent-sd@{teachers['sd']}", "--student", "teacher", "--lora", "4",
        '--set=teacher.prompts=["a cat", "a dog"]', "--set", "train.lr=0.01", "--out", str(run), *FAST, *DKDM)  # fmt: skip
    output = cli("export", str(run), str(out))
    assert "a diffusers LoRA for the teacher's StableDiffusionPipeline" in output and "--merge" in output
    assert_adapters_only(out, "StableDiffusionPipeline")
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (out, run / "pipeline")}
    assert sizes[out] == sizes[run / "pipeline"]  # the end of `distill` wrote the same export

    cli("export", str(run), str(merged_folder), "--merge")
    merged = diffusers.StableDiffusionPipeline.from_pretrained(merged_folder)
    assert (merged_folder / "lora/pytorch_lora_weights.safetensors").is_file()  # beside the merged weights
    adapted = diffusers.StableDiffusionPipeline.from_pretrained(teachers["sd"])  # as the card loads it
    adapted.load_lora_weights(out)
    adapted.scheduler = diffusers.DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    assert type(merged.scheduler) is diffusers.DDIMScheduler

    def images(pipe) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return pipe(
            "a cat", num_inference_steps=3, guidance_scale=1.0, generator=generator, output_type="np"
        ).images

    np.testing.assert_allclose(images(adapted), images(merged), atol=1e-4, rtol=1e-4)
    adapted.unload_lora_weights()
    assert np.abs(images(adapted) - images(merged)).max() > 1e-4  # the adapters change the images

    cli("sample", str(run), "--n", "2", "--steps", "2", "--prompt", "a cat", "--out", str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").is_file()


def test_an_sdxl_one_step_lora_generator_exports_adapters_and_the_euler_call(teachers, tmp_path):
    run, merged_folder = tmp_path / "run", tmp_path / "merged"
    cli("distill", "--teacher", str(teachers["sdxl"]), "--student", "teacher", "--lora", "2", "--method", "sid",
        "--set", "method.fake_score_steps=1", "--set", "train.lr=0.01", PROMPTS, "--out", str(run), *FAST)  # fmt: skip
    kind = "StableDiffusionXLPipeline"
    assert_adapters_only(run / "pipeline", kind)
    args = card_arguments(run)
    assert list(args["timesteps"]) == [int(t) for t in args["timesteps"]] and len(args["timesteps"]) == 1
    cli("export", str(run), str(merged_folder), "--merge")
    merged = diffusers.StableDiffusionXLPipeline.from_pretrained(merged_folder)
    adapted = diffusers.StableDiffusionXLPipeline.from_pretrained(teachers["sdxl"])
    adapted.load_lora_weights(run / "pipeline")
    adapted.scheduler = diffusers.EulerDiscreteScheduler.from_pretrained(
        run / "pipeline", subfolder="scheduler"
    )
    assert type(merged.scheduler) is diffusers.EulerDiscreteScheduler
    torch.testing.assert_close(stock_latents(adapted, args, None), stock_latents(merged, args, None))
