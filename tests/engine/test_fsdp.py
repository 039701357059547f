"""FSDP2 on CPU: `torchrun --nproc_per_node 2` (gloo) runs of the real CLI with train.sharding='fsdp'.

- the first losses equal those of single-process runs over the same global batch (process r of a
  run with seed s draws what a one-process run with seed s + r draws, from the same initial weights);
- SiD under fsdp logs the same losses, step by step, as under ddp (same draws, same gradients);
- a sharded run stopped at step 2 and resumed gives bit-equal final weights; another number of
  processes is refused in one line;
- the final student is gathered whole, exported and loads.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dkdm_zoo.config import build as builder
from dkdm_zoo.config import resolve as resolver
from dkdm_zoo.engine import train
from dkdm_zoo.runs import Run
from tests.methods.tiny import tiny_registry

ROOT = Path(__file__).resolve().parents[2]
MAIN = Path(__file__).with_name("torchrun_main.py")  # the real CLI over the tiny test registry

RECIPE = """
[recipe]
name = "fsdp-{method}"
[teacher]
name = "tiny"
num_classes = 3
[student]
name = "tiny-unet"
[method]
name = "{method}"
{method_options}
[train]
steps = 3
batch_size = 4
log_every = 1
preview_every = 0
checkpoint_every = 1
ema_decay = 0.9
sharding = "{sharding}"
"""
OPTIONS = {"dkdm": 'rho = 0.1\npool_init = "ddim"\npool_init_steps = 2', "sid": ""}


def recipe_file(folder: Path, method: str, sharding: str = "fsdp") -> Path:
    path = folder / f"{method}-{sharding}.toml"
    path.write_text(RECIPE.format(method=method, method_options=OPTIONS[method], sharding=sharding))
    return path


def torchrun(*args: str, port: int, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(port), str(MAIN), "distill", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def step_records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in Run(run).read_metrics() if "event" not in r}


def one_process_first_losses(recipe: Path, seed: int, out: Path) -> dict:
    """Step 1 of a one-process run from the same initial weights (built from the recipe's seed 0)
    with the method drawing as process ``seed`` of a seed-0 run does."""
    registry = tiny_registry()
    resolved = resolver.resolve(registry, recipe=str(recipe))
    built = builder.build(resolved, registry)
    cfg = dataclasses.replace(resolved.train, seed=seed, checkpoint_every=0, sharding="ddp")
    train(
        dataclasses.replace(resolved, train=cfg),
        built.teacher,
        built.student,
        built.method,
        Run(out),
        quiet=True,
        stop_at=1,
    )  # fmt: skip (the run's steps: DKDM sizes its pool to them)
    return step_records(out)[1]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.mark.slow
def test_dkdm_under_fsdp_matches_one_process_and_exports(tmp_path):
    recipe = recipe_file(tmp_path, "dkdm")
    proc = torchrun("--recipe", str(recipe), "--out", str(tmp_path / "fsdp"), port=29541)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = Run(tmp_path / "fsdp").read_metrics()
    assert records[0]["sharding"] == "fsdp" and records[0]["world_size"] == 2
    first = step_records(tmp_path / "fsdp")[1]
    single = [one_process_first_losses(recipe, s, tmp_path / f"one{s}") for s in (0, 1)]
    assert first["loss"] == pytest.approx((single[0]["loss"] + single[1]["loss"]) / 2, rel=1e-5)
    end = records[-1]
    sums = [p["param_sum"] for p in end["param_sums"]]
    assert sums[0] == sums[1]  # the shards' sums, added up over the processes
    # sharded checkpoint files: each process's shards, safetensors
    ckpt = tmp_path / "fsdp/checkpoints/checkpoint-0000003"
    assert json.loads((ckpt / "state.json").read_text())["sharding"] == "fsdp"
    assert len(list((ckpt / "networks").glob("*.safetensors"))) == 2
    assert not (ckpt / "student.safetensors").exists()
    # the final student is whole and loads; its pipeline folder is written
    from dkdm_zoo.runs.student import load_student

    registry = tiny_registry()
    student = load_student(Run(tmp_path / "fsdp"), registry)
    unsharded = builder.build(resolver.resolve(registry, recipe=str(recipe)), registry).student
    assert [(n, p.shape) for n, p in student.named_parameters()] == [
        (n, p.shape) for n, p in unsharded.named_parameters()
    ]
    assert (tmp_path / "fsdp/pipeline/model_index.json").is_file()


@pytest.mark.slow
def test_sid_under_fsdp_equals_ddp_resumes_bit_equal_and_exports(tmp_path):
    fsdp, ddp = recipe_file(tmp_path, "sid"), recipe_file(tmp_path, "sid", "ddp")
    runs = {
        "fsdp": torchrun("--recipe", str(fsdp), "--out", str(tmp_path / "fsdp"), port=29542),
        "ddp": torchrun("--recipe", str(ddp), "--out", str(tmp_path / "ddp"), port=29543),
        "half": torchrun("--recipe", str(fsdp), "--out", str(tmp_path / "half"), "--steps", "2", port=29544),
    }
    for name, proc in runs.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    resumed = torchrun("--recipe", str(fsdp), "--out", str(tmp_path / "half"), "--resume", port=29545)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    sharded, replicated = step_records(tmp_path / "fsdp"), step_records(tmp_path / "ddp")
    # the same draws and gradients: the same losses, sharded or not. The first fake-score loss comes
    # before any update; after one, Adam turns float-level differences in the summed gradients
    # (reduce-scatter vs all-reduce order) into weight differences of ~1e-5 lr-relative
    assert sharded[1]["fake_score_loss"] == pytest.approx(replicated[1]["fake_score_loss"], rel=1e-6)
    for step in (1, 2, 3):
        for key in ("loss", "fake_score_loss"):
            assert sharded[step][key] == pytest.approx(replicated[step][key], rel=1e-4), (step, key)
    single = [one_process_first_losses(fsdp, s, tmp_path / f"one{s}") for s in (0, 1)]
    mean = (single[0]["fake_score_loss"] + single[1]["fake_score_loss"]) / 2
    assert sharded[1]["fake_score_loss"] == pytest.approx(mean, rel=1e-5)

    # stopped at step 2 and resumed: the same final (EMA) student, bit for bit
    straight, again = weights(tmp_path / "fsdp/student"), weights(tmp_path / "half/student")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    # Adam's first steps move a weight by about lr (1e-4) whatever its gradient's size: gradients
    # summed in another order (reduce-scatter vs all-reduce) differ by up to ~1e-5 after 3 steps
    whole = weights(tmp_path / "ddp/student")
    assert max((straight[k] - whole[k]).abs().max().item() for k in straight) < 2e-5
    assert (tmp_path / "fsdp/pipeline/model_index.json").is_file()

    # another number of processes: refused in one line, nothing changed
    one = subprocess.run(
        [sys.executable, str(MAIN), "distill", "--quiet", "--recipe", str(fsdp), "--out",
         str(tmp_path / "half"), "--resume", "--steps", "4"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert one.returncode == 2, one.stderr[-2000:]
    assert "written by 2 processes, this run has 1" in one.stderr and "Traceback" not in one.stderr


SD_RECIPE = """
[recipe]
name = "fsdp-sd"
[teacher]
name = "latent-sd"
path = "{path}"
prompts = ["a photo of a cat", "a red bicycle", "a lighthouse at dawn"]
[student]
name = "unet"
[method]
name = "sid"
[train]
steps = 2
batch_size = 2
log_every = 1
preview_every = 0
checkpoint_every = 2
sharding = "fsdp"
"""


@pytest.mark.slow
def test_sid_on_a_narrow_stable_diffusion_copy_under_fsdp(tmp_path):
    """Text conditions, cross-attention blocks as units, a latent student exported with the VAE."""
    pytest.importorskip("transformers")
    from diffusers import DiffusionPipeline

    import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline with diffusers
    from dkdm_zoo.testing.hub_fixtures import build_sd15

    recipe = tmp_path / "sd.toml"
    recipe.write_text(SD_RECIPE.format(path=build_sd15(tmp_path / "sd15", size="narrow")))
    proc = torchrun("--recipe", str(recipe), "--out", str(tmp_path / "run"), port=29546)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = step_records(tmp_path / "run")[1]
    single = [one_process_first_losses(recipe, s, tmp_path / f"one{s}") for s in (0, 1)]
    mean = (single[0]["fake_score_loss"] + single[1]["fake_score_loss"]) / 2
    assert first["fake_score_loss"] == pytest.approx(mean, rel=1e-5)
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "run/pipeline")
    assert {"vae", "text_encoder", "tokenizer", "student"} <= set(pipeline.components)
