"""The hand-off, judged by FD: plain diffusers, called as the card says, samples what `dkdm-zoo sample`
samples (the same seed: the same images, so the same FD), for a class-conditional learned-variance
student and a one-step generator.

The students are the digits-dit teacher's own network (`--student teacher`) trained one step at a
negligible learning rate, so both paths face a model that makes real digits: a broken export (the
ancestral DDPM default, the wrong timestep grid, random labels) shows up as a worse FD, not as noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from typer.testing import CliRunner

import dkdm_zoo.pipelines  # noqa: F401  (registers DKDMZooPipeline with diffusers, as the card says)
from dkdm_zoo.cli.app import create_app
from dkdm_zoo.evaluation.metrics import evaluate
from dkdm_zoo.generation.sources import load_source
from dkdm_zoo.registry import build_registry
from dkdm_zoo.sampling.settings import SamplingSettings
from tests.conftest import strip_ansi

N = 300  # images per path: FD noise between seeds stays well under the gaps a broken export opens
STEPS = 10  # divides T = 1000: diffusers' DDIM grid is then dkdm-zoo's trailing grid
FAST = [
    "--steps", "1", "--batch-size", "2", "--quiet", "--set", "train.lr=1e-9",
    "--set", "train.preview_every=0", "--set", "train.final_eval_samples=0",
]  # fmt: skip


def distill(out: Path, *args: str) -> Path:
    registry = build_registry(entry_points=False)
    result = CliRunner().invoke(create_app(registry), ["distill", "--out", str(out), *FAST, *args])
    assert result.exit_code == 0, strip_ansi(result.output)
    return out


def cli_sample(run: Path, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`dkdm-zoo sample RUN`'s images in [-1, 1] and the labels it drew them for (balanced)."""
    source = load_source(str(run), build_registry(entry_points=False), device="cpu")
    images, labels = source.generate(
        N, SamplingSettings(steps=STEPS, seed=seed), labels="all", progress=False
    )
    return images, labels


def pipeline_sample(run: Path, labels: torch.Tensor, seed: int, **call) -> torch.Tensor:
    """The card's call on the exported folder, in [-1, 1]."""
    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        class_labels=labels.tolist(), generator=torch.Generator().manual_seed(seed), output_type="pt", **call
    ).images
    return images * 2 - 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("handoff")
    dkdm = ["--teacher", "digits-dit", "--student", "teacher", "--method", "dkdm",
            "--set", "method.pool_init=ddim", "--set", "method.pool_init_steps=1", "--set", "method.rho=0.001"]  # fmt: skip
    return {
        "learned-variance": distill(root / "lv", *dkdm),
        "one-step": distill(root / "sid", "--teacher", "digits-dit", "--method", "sid"),
    }


def test_a_class_conditional_learned_variance_student_scores_the_same_in_plain_diffusers(runs):
    run = runs["learned-variance"]
    ours, labels = cli_sample(run, seed=0)
    other_seed, _ = cli_sample(run, seed=1)
    theirs = pipeline_sample(run, labels, seed=0, num_inference_steps=STEPS)
    fd = {name: evaluate(x, "data", labels=labels)["fd"] for name, x in
          (("ours", ours), ("ours, other seed", other_seed), ("diffusers", theirs))}  # fmt: skip
    # the same seed draws the same noise: the same FD, not merely one within the seeds' spread (the
    # teacher clips x0, and a DDIM step that does not re-derive eps from it scored 1.5 worse at 50 steps)
    assert abs(fd["diffusers"] - fd["ours"]) <= 1e-3 * fd["ours"], fd
    assert fd["ours"] != fd["ours, other seed"]
    # the learned variance drives the ancestral sampler when a user swaps it in, and it is worse here:
    # which is why the export's default is the sampler `dkdm-zoo sample` uses
    from diffusers import DDPMScheduler

    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ValueError, match="class_labels"):
        pipe(batch_size=2, num_inference_steps=2)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, variance_type="learned_range")
    assert pipe._scheduler_takes_variance()


def test_a_one_step_generator_scores_the_same_in_plain_diffusers(runs):
    run = runs["one-step"]
    ours, labels = cli_sample(run, seed=0)
    theirs = pipeline_sample(run, labels, seed=0)
    fd = {
        name: evaluate(x, "data", labels=labels)["fd"] for name, x in (("ours", ours), ("diffusers", theirs))
    }
    assert abs(fd["diffusers"] - fd["ours"]) <= 1e-3 * fd["ours"], fd
