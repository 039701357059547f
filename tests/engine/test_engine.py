"""The engine end to end through `dkdm-zoo distill`: resume equality, atomic checkpoints, export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
from dkdm_zoo.engine import NonFiniteLossError, train
from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.runs import Run
from tests.methods.tiny import tiny_registry, tiny_student, tiny_teacher

FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]


def distill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(tiny_registry()), ["distill", *args])
    return result.exit_code, result.output


def base_args(out: Path, steps: int) -> list[str]:
    return [
        "--teacher",
        "tiny",
        "--student",
        "tiny-unet",
        "--steps",
        str(steps),
        "--batch-size",
        "4",
        "--out",
        str(out),
        *FAST,
    ]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    # rho 0.1: a pool of 2 x 4 slots, below both runs' draws (a shorter plan would size a smaller pool)
    small = ["--set", "train.checkpoint_every=3", "--set", "method.rho=0.1"]
    code, out = distill(*base_args(tmp_path / "a", 6), *small)
    assert code == 0, out
    code, out = distill(*base_args(tmp_path / "b", 3), *small)
    assert code == 0, out
    # a kill mid-checkpoint leaves a temp folder and an incomplete folder: resume must ignore both
    (tmp_path / "b/checkpoints/.tmp-checkpoint-0000004").mkdir()
    (tmp_path / "b/checkpoints/.tmp-checkpoint-0000004/student.safetensors").write_bytes(b"garbage")
    (tmp_path / "b/checkpoints/checkpoint-0000005").mkdir()
    code, out = distill("--out", str(tmp_path / "b"), "--resume", "--steps", "6", *FAST)
    assert code == 0, out
    assert not (tmp_path / "b/checkpoints/.tmp-checkpoint-0000004").exists()
    for sub in ("student", "checkpoints/checkpoint-0000006"):
        a, b = weights(tmp_path / "a" / sub), weights(tmp_path / "b" / sub)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # the pool was restored, not re-initialised: same forward count as the uninterrupted run
    end_a = Run(tmp_path / "a").read_metrics()[-1]
    end_b = Run(tmp_path / "b").read_metrics()[-1]
    assert (
        end_a["event"] == end_b["event"] == "end" and end_a["teacher_forwards"] == end_b["teacher_forwards"]
    )
    assert (tmp_path / "b/checkpoints/latest").read_text() == "checkpoint-0000006"
    assert {
        p.name for p in (tmp_path / "b/checkpoints").glob("checkpoint-*/state.json") for p in [p.parent]
    } == {
        "checkpoint-0000003",
        "checkpoint-0000006",
    }


def test_run_folder_contents_and_pipeline_loads(tmp_path):
    from diffusers import DDIMPipeline, DDPMPipeline

    run = tmp_path / "run"
    code, out = distill(
        *base_args(run, 2)[:-5],
        "--set",
        "train.preview_every=2",
        "--set",
        "train.preview_samples=4",
        "--set",
        "train.preview_steps=3",
        "--set",
        "train.log_every=1",
        "--quiet",
    )
    assert code == 0, out
    manifest = json.loads((run / "run.json").read_text())
    assert (
        manifest["format_version"] == 1
        and manifest["teacher"]["name"] == "tiny"
        and manifest["method"]["name"] == "dkdm"
    )
    assert manifest["teacher_spec"]["sample_shape"] == [1, 8, 8] and manifest["one_step"] is False
    assert (run / "previews/step-0000002.png").is_file() and (run / "recipe.toml").is_file()
    records = [r for r in Run(run).read_metrics() if "loss" in r]
    assert [r["step"] for r in records] == [1, 2] and records[-1]["teacher_forwards"] > 0
    pipe = DDPMPipeline.from_pretrained(run / "pipeline")
    images = pipe(
        batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert images.shape == (2, 8, 8, 1)
    pipe = DDIMPipeline.from_pretrained(run / "pipeline")
    assert pipe.scheduler.config.num_train_timesteps == 20
    assert pipe(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 1)


def test_cli_user_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x.txt").write_text("x")
    code, out = distill(*base_args(tmp_path / "full", 2))
    assert code == 2 and "--resume" in out and "--overwrite" in out
    code, out = distill(*base_args(tmp_path / "full", 2), "--overwrite")
    assert code == 2 and "does not look like a run folder" in out
    code, out = distill(*base_args(tmp_path / "z", 0))
    assert code == 2 and "--steps: train.steps = 0 is not an integer > 0" in out
    code, out = distill(*base_args(tmp_path / "z", 2), "--method", "dkdn")
    assert code == 2 and "dkdm" in out
    code, out = distill(*base_args(tmp_path / "z", 2), "--set", "method.rhoo=1")
    assert code == 2 and "rho" in out
    assert not (tmp_path / "z").exists()


def test_dry_run_prints_sizes_and_budget(tmp_path):
    code, out = distill(
        "--teacher", "tiny", "--student", "tiny-unet", "--steps", "10", "--batch-size", "4", "--dry-run"
    )
    assert code == 0, out
    assert "parameters" in out and "teacher forwards" in out and "pool_slots = 32" in out
    assert "training 40" in out  # 10 steps x 4 samples, one forward each


class NaNAfter(DKDM):
    def loss(self, student, batch_size, step):
        loss, logs = super().loss(student, batch_size, step)
        return (loss * float("nan") if step >= 2 else loss), logs


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    teacher = tiny_teacher()
    student = tiny_student(teacher.spec)
    recipe = Recipe(
        "t",
        Component("tiny"),
        Component("tiny-unet"),
        train=TrainConfig(steps=5, batch_size=4, checkpoint_every=1, preview_every=0),
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        train(recipe, teacher, student, NaNAfter(teacher, student), Run(tmp_path), quiet=True)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-0000001", "checkpoint-0000002", "latest"]
    assert (tmp_path / "checkpoints/latest").read_text() == "checkpoint-0000002"
    assert weights(tmp_path / "checkpoints/checkpoint-0000002")


@pytest.mark.slow
def test_two_process_cpu_run_with_torchrun(tmp_path):
    script = Path(__file__).with_name("torchrun_main.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(script),
    ]
    cmd += ["distill", *base_args(tmp_path / "ddp", 3)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=500, cwd=Path(__file__).resolve().parents[2]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = Run(tmp_path / "ddp").read_metrics()
    start, end = records[0], records[-1]
    assert start["world_size"] == 2 and sorted(p["rank"] for p in start["processes"]) == [0, 1]
    assert len({p["pid"] for p in start["processes"]}) == 2
    sums = [p["param_sum"] for p in end["param_sums"]]
    assert len(sums) == 2 and sums[0] == pytest.approx(sums[1], rel=1e-6)
    assert {"method-rank0.safetensors", "method-rank1.safetensors"} <= {
        p.name for p in (tmp_path / "ddp/checkpoints/checkpoint-0000003").iterdir()
    }
    shutil.rmtree(tmp_path / "ddp")
