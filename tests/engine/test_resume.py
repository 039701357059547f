"""`--resume` does what it says: the same command plus --resume continues bit-equal, settings a
checkpoint does not fix (lr, steps, cadence) take effect and are recorded, an unreadable latest
checkpoint falls back to the newest readable one, and a full disk keeps the last checkpoint."""

from __future__ import annotations

import errno
import json
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.runs import Run
from tests.methods.tiny import tiny_registry

# rho 0.1: a DKDM pool of 2 x 4 slots, below every plan's draws here (a shorter plan than the
# uninterrupted run's would otherwise size a smaller pool, and the runs could not be bit-equal)
TINY = ["--teacher", "tiny", "--student", "tiny-unet", "--batch-size", "4", "--set", "method.rho=0.1"]
FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]


def distill(*args: str):
    return CliRunner().invoke(create_app(tiny_registry()), ["distill", *args])


def command(out: Path, steps: int, *extra: str) -> list[str]:
    return [*TINY, "--steps", str(steps), "--out", str(out), *FAST, *extra]


def student(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = student(a), student(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_the_same_command_with_resume_continues_bit_equal(tmp_path):
    every = ["--set", "train.checkpoint_every=3"]
    assert distill(*command(tmp_path / "solo", 6, *every)).exit_code == 0
    result = distill(*command(tmp_path / "cut", 3, *every))
    assert result.exit_code == 0, result.output
    # the very same command line, --resume added (only --steps grew): accepted, not "repeats --teacher"
    result = distill(*command(tmp_path / "cut", 6, *every), "--resume")
    assert result.exit_code == 0, result.output
    assert (
        result.stderr == "--resume: resuming from checkpoint-0000003 (step 3); changed: train.steps 3 -> 6\n"
    )
    assert_same_weights(tmp_path / "solo/student", tmp_path / "cut/student")
    recorded = tomllib.loads((tmp_path / "cut/recipe.toml").read_text())
    assert recorded["train"]["steps"] == 6


def test_a_changed_lr_and_cadence_take_effect_on_resume(tmp_path):
    out = tmp_path / "run"
    first = ["--set", "train.lr=0.001", "--set", "train.checkpoint_every=2"]
    assert distill(*command(out, 2, *first)).exit_code == 0
    result = distill(
        *command(out, 5, "--set", "train.lr=0.0002", "--set", "train.checkpoint_every=1", "--resume")
    )
    assert result.exit_code == 0, result.output
    assert "train.lr 0.001 -> 0.0002" in result.stderr and "train.checkpoint_every 2 -> 1" in result.stderr
    lrs = {r["step"]: r["lr"] for r in Run(out).read_metrics() if "lr" in r}
    assert lrs[1] == lrs[2] == pytest.approx(1e-3) and lrs[3] == lrs[5] == pytest.approx(2e-4)
    steps = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert steps == ["checkpoint-0000004", "checkpoint-0000005"]  # every step now (keep 2)
    recorded = tomllib.loads((out / "recipe.toml").read_text())["train"]
    assert recorded["lr"] == 2e-4 and recorded["checkpoint_every"] == 1


def test_a_warmup_schedule_continues_from_the_checkpoint_with_the_new_settings(tmp_path):
    """A linear warm-up over 4 steps, stopped after 2 at lr 1e-3, resumed with lr 2e-3 and 10 steps:
    the schedule keeps its position, its peak and length are the new ones."""
    out = tmp_path / "run"
    warm = ["--set", "train.warmup_steps=4", "--set", "train.lr_schedule=linear"]
    assert distill(*command(out, 2, *warm, "--set", "train.lr=0.001")).exit_code == 0
    result = distill(*command(out, 10, *warm, "--set", "train.lr=0.002", "--resume"))
    assert result.exit_code == 0, result.output
    lr = {r["step"]: r["lr"] for r in Run(out).read_metrics() if "lr" in r}  # the lr of the next step
    # diffusers' linear schedule: lr * step / warmup, then a linear decay to 0 at train.steps
    assert lr[1] == pytest.approx(1e-3 / 4) and lr[2] == pytest.approx(1e-3 * 2 / 4)
    assert lr[3] == pytest.approx(2e-3 * 3 / 4) and lr[4] == pytest.approx(2e-3)
    assert lr[7] == pytest.approx(2e-3 * (10 - 7) / (10 - 4)) and lr[10] == 0


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda ckpt: _truncate(ckpt / "student.safetensors"), "student.safetensors"),
        (lambda ckpt: (ckpt / "state.json").write_text('{"step": 4,'), "state.json"),
        (lambda ckpt: _truncate(ckpt / "optimizer.pt"), "optimizer.pt"),
        (lambda ckpt: (ckpt / "lr_schedule.json").write_text("{"), "lr_schedule.json"),
    ],
    ids=["truncated-weights", "bad-state-json", "truncated-optimizer", "bad-schedule-json"],
)
def test_an_unreadable_latest_checkpoint_falls_back(tmp_path, damage, named):
    every = ["--set", "train.checkpoint_every=2"]
    assert distill(*command(tmp_path / "solo", 6, *every)).exit_code == 0
    out = tmp_path / "run"
    assert distill(*command(out, 4, *every)).exit_code == 0
    damage(out / "checkpoints/checkpoint-0000004")
    result = distill(*command(out, 6, *every), "--resume")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " is unreadable (" in line]
    assert len(lines) == 1 and f"checkpoint-0000004 is unreadable ({named}" in lines[0], result.stderr
    assert "resuming from checkpoint-0000002 (step 2)" in lines[0]
    assert_same_weights(tmp_path / "solo/student", out / "student")


def test_no_readable_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    assert distill(*command(out, 2, "--set", "train.checkpoint_every=2")).exit_code == 0
    _truncate(out / "checkpoints/checkpoint-0000002/student.safetensors")
    result = distill(*command(out, 4), "--resume")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "no readable checkpoint" in result.stderr and "student.safetensors" in result.stderr


def test_a_full_disk_stops_the_run_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_model
    calls = {"n": 0}

    def save_model(model, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)
    out = tmp_path / "run"
    result = distill(*command(out, 3, "--set", "train.checkpoint_every=1"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    err = result.stderr
    assert f"no space left on the disk of {out / 'checkpoints'} for checkpoint 2" in err
    assert "MiB" in err and "the last checkpoint (checkpoint-0000001) is kept" in err and "--resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-0000001", "latest"]
    monkeypatch.setattr(safetensors.torch, "save_model", real)  # space freed: the same command resumes
    assert distill(*command(out, 3, "--set", "train.checkpoint_every=1"), "--resume").exit_code == 0
    assert Run(out).finished


def test_a_resume_that_fails_before_its_first_step_restores_the_folder(tmp_path, monkeypatch):
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.methods.dkdm import DKDM

    out = tmp_path / "run"
    assert distill(*command(out, 2, "--set", "train.checkpoint_every=2")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def failing_setup(self, ctx):
        raise UserError("the pool could not be restored")

    monkeypatch.setattr(DKDM, "setup", failing_setup)
    result = distill(*command(out, 4, "--set", "train.lr=0.0005"), "--resume")
    assert result.exit_code == 2 and "the pool could not be restored" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_new_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path, monkeypatch):
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.methods.dkdm import DKDM

    real_setup = DKDM.setup

    def failing_setup(self, ctx):
        raise UserError("out of memory while initialising the pool")

    monkeypatch.setattr(DKDM, "setup", failing_setup)
    out = tmp_path / "deep" / "run"
    result = distill(*command(out, 2))
    assert result.exit_code == 2 and "out of memory" in result.stderr
    assert not (tmp_path / "deep").exists()  # recipe.toml/run.json were written, then taken back
    monkeypatch.setattr(DKDM, "setup", real_setup)
    assert distill(*command(out, 2)).exit_code == 0  # the corrected command is not "not empty"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_metrics_tolerate_a_line_cut_by_a_kill(tmp_path):
    out = tmp_path / "run"
    assert distill(*command(out, 2)).exit_code == 0
    records = Run(out).read_metrics()
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 1.0})[:10])
    assert Run(out).read_metrics() == records
