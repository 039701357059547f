"""FSDP2 on CPU: `torchrun --nproc_per_node 2` (gloo) runs of the real CLI with train.sharding='fsdp'.

- the first losses equal those of single-process runs over the same global batch (process r of a
  run with seed s draws what a one-process run with seed s + r draws, from the same initial weights);
- SiD under fsdp logs the same losses, step by step, as under ddp (same draws, same gradients);
- a sharded run stopped at step 2 and resumed gives bit-equal final weights; another number of
  processes is refused in one line;
- the final student is gathered whole, exported and loads;
- only process 0 builds the copies of the teacher's network whole (a teacher-copy student, SiD's fake
  score): process 1 builds them empty (meta device) and receives its shards from process 0.
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
{student}
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
#: DKDM trains a copy of the teacher's own network (`--student teacher`; its output read as v, so it
#: does not start at the teacher's answer), SiD the tiny UNet
STUDENTS = {"dkdm": 'name = "teacher"\nprediction_type = "v_prediction"', "sid": 'name = "tiny-unet"'}


def recipe_file(folder: Path, method: str, sharding: str = "fsdp") -> Path:
    path = folder / f"{method}-{sharding}.toml"
    path.write_text(
        RECIPE.format(
            method=method, method_options=OPTIONS[method], sharding=sharding, student=STUDENTS[method]
        )
    )
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


def held_before_sharding(run: Path) -> dict[int, dict[str, int]]:
    """Per process: how many parameter values of each trained network it built (the start event)."""
    start = Run(run).read_metrics()[0]
    return {p["rank"]: p["held_parameters"] for p in start["processes"]}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.mark.slow
def test_dkdm_under_fsdp_matches_one_process_and_exports(tmp_path):
    recipe = recipe_file(tmp_path, "dkdm")
    proc = torchrun("--recipe", str(recipe), "--out", str(tmp_path / "fsdp"), port=29541)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = Run(tmp_path / "fsdp").read_metrics()
    assert records[0]["sharding"] == "fsdp" and records[0]["world_size"] == 2
    # the teacher-copy student: whole on process 0 only, empty (meta) on process 1 before sharding
    teacher_size = sum(
        p.numel() for p in tiny_registry().create("teachers", "tiny", num_classes=3).denoiser().parameters()
    )
    assert held_before_sharding(tmp_path / "fsdp") == {0: {"student": teacher_size}, 1: {"student": 0}}
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

    # the fake score (a copy of the teacher's network) is built whole by process 0 only; under ddp by
    # both; the tiny UNet generator (a network of its own) by both
    held, whole = held_before_sharding(tmp_path / "fsdp"), held_before_sharding(tmp_path / "ddp")
    assert held[1]["fake_score"] == 0 and held[0] == whole[0] == whole[1]
    assert held[0]["fake_score"] > 0 and held[1]["student"] == held[0]["student"] > 0
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


@pytest.mark.slow
def test_a_lora_student_under_fsdp_is_refused_in_one_line(tmp_path):
    """LoRA adapters train on the teacher's own frozen tensors, which FSDP would shard under the
    teacher and the student at once: refused before anything is written."""
    recipe = recipe_file(tmp_path, "dkdm")
    proc = torchrun("--recipe", str(recipe), "--out", str(tmp_path / "lora"), "--set", "student.lora_rank=2",
                    port=29547)  # fmt: skip
    # each process stops with the one line and exit code 2 (the traceback after it is torchrun's own)
    assert proc.returncode != 0 and "exitcode: 2" in proc.stderr and "[rank0]" not in proc.stderr
    line = "error: train.sharding='fsdp': student trains LoRA adapters on the teacher's own frozen network"
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert "use train.sharding='ddp'" in proc.stderr and not (tmp_path / "lora/checkpoints").exists()


SD_RECIPE = """
[recipe]
name = "fsdp-sd"
[teacher]
name = "latent-sd"
path = "{path}"
prompts = ["a photo of a cat", "a red bicycle", "a lighthouse at dawn"]
[student]
name = "teacher"
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
    """Text conditions, cross-attention blocks as units, a latent student exported with the VAE. The
    generator and the fake score are both copies of the teacher's UNet (two networks of one size)."""
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
    held = held_before_sharding(tmp_path / "run")
    assert held[0]["fake_score"] == held[0]["student"] > 0  # the UNet copies: on process 0 only
    assert held[1] == {"student": 0, "fake_score": 0}
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "run/pipeline")
    assert {"vae", "text_encoder", "tokenizer", "student"} <= set(pipeline.components)
