"""Nothing lost: a full disk while checkpointing, Ctrl-C in training and in the pool
initialisation, and sampling beside (never over) a run's own artefacts."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import dkdm_zoo.engine.checkpoint as checkpoint
from dkdm_zoo.methods.dkdm import DKDM
from tests.hostile.conftest import EVERY_STEP, FAST, TINY, invoke, refused

ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"


def _litter(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".tmp" in p.name)


def test_safetensors_own_disk_full_error_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """safetensors raises SafetensorError, not OSError, when the disk fills (its real message)."""
    real, calls = checkpoint.save_file, {"n": 0}

    def save_file(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # method + rng + ema per checkpoint: the second checkpoint fails
            raise SafetensorError(ENOSPC_TEXT)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    out = tmp_path / "run"
    err = refused(
        invoke("distill", *TINY, "--steps", "3", "--out", out, *EVERY_STEP, *FAST),
        "no space left on the disk",
        "the last checkpoint (checkpoint-0000001) is kept",
        "--resume",
    )
    assert "MiB" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-0000001", "latest"]
    assert _litter(out) == []
    monkeypatch.setattr(checkpoint, "save_file", real)
    result = invoke("distill", *TINY, "--steps", "3", "--out", out, *EVERY_STEP, *FAST, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming from checkpoint-0000001" in result.stderr


def test_torch_save_runtime_error_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError ("unexpected pos ..."): checked against the
    free space, it is the disk-full line too."""
    real = checkpoint.save_torch
    calls = {"n": 0}

    def save_torch(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real(obj, path)

    monkeypatch.setattr(checkpoint, "save_torch", save_torch)
    monkeypatch.setattr(checkpoint, "checkpoint_bytes", lambda *a, **k: 2**62)  # more than any disk has free
    out = tmp_path / "run"
    refused(
        invoke("distill", *TINY, "--steps", "3", "--out", out, *EVERY_STEP, *FAST),
        "no space left on the disk",
        "checkpoint-0000001",
    )
    assert _litter(out) == []


@contextlib.contextmanager
def _small_tmpfs(folder: Path, size: str):
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_really_full_disk_keeps_the_last_checkpoint_and_leaves_no_temp_files(tmp_path):
    with _small_tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "run"
        result = invoke("distill", *TINY, "--steps", "1", "--out", out, *EVERY_STEP, *FAST)
        assert result.exit_code == 0, result.output
        saved = {p.name: p.read_bytes() for p in (out / "checkpoints/checkpoint-0000001").iterdir()}
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(free - 48 * 1024, 0))  # room for metrics, not a checkpoint
        result = invoke("distill", *TINY, "--steps", "3", "--out", out, *EVERY_STEP, *FAST, "--resume")
        err = refused(result)
        assert "space" in err.lower()
        assert {p.name: p.read_bytes() for p in (out / "checkpoints/checkpoint-0000001").iterdir()} == saved
        assert _litter(out) == []


def _interrupt_at(monkeypatch, step: int) -> None:
    real = DKDM.loss

    def loss(self, student, batch_size, at):
        if at == step:
            raise KeyboardInterrupt
        return real(self, student, batch_size, at)

    monkeypatch.setattr(DKDM, "loss", loss)


def test_ctrl_c_in_training_says_what_was_saved_and_the_command_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    result = invoke(
        "distill", *TINY, "--steps", "5", "--out", out, "--set", "train.checkpoint_every=2", *FAST
    )
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert f"{out}/checkpoints/checkpoint-0000002 is saved; continue with: dkdm-zoo distill" in result.stderr
    command = shlex.split(result.stderr.split("continue with: ")[1])
    assert command[-1] == "--resume"
    monkeypatch.undo()
    again = invoke(*command[1:])
    assert again.exit_code == 0, again.output
    assert "resuming from checkpoint-0000002 (step 2)" in again.stderr and (out / "student").is_dir()


def test_ctrl_c_before_any_checkpoint_says_so_and_leaves_no_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 0)
    result = invoke("distill", *TINY, "--steps", "5", "--out", out, *FAST)
    assert result.exit_code == 130 and result.stderr.count("\n") == 1, result.output
    assert "no checkpoint was written" in result.stderr
    assert not out.exists()


POOL = [
    "--set",
    "method.rho=0.2",
    "--set",
    "method.pool_init=ancestral",
    "--set",
    "train.setup_checkpoint_minutes=1000",
]


def test_ctrl_c_in_the_pool_initialisation_keeps_its_finished_part_for_resume(tmp_path, monkeypatch):
    """The first Ctrl-C lets the initialisation reach its next level, saves it (checkpoint 0) and
    stops; --resume goes on from there and trains exactly what an uninterrupted run trains."""
    args = [*TINY, "--steps", "2", *POOL, *FAST]
    assert invoke("distill", *args, "--out", tmp_path / "straight").exit_code == 0
    real = DKDM.setup
    levels = {"n": 0}

    def setup(self, ctx):
        save = ctx.save_progress

        def interrupted_at_level_five() -> None:
            levels["n"] += 1
            if levels["n"] == 5:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, to this process
            save()

        real(self, type(ctx)(**{**ctx.__dict__, "save_progress": interrupted_at_level_five}))

    monkeypatch.setattr(DKDM, "setup", setup)
    out = tmp_path / "killed"
    result = invoke("distill", *args, "--out", out)
    assert result.exit_code == 130, result.output
    assert "checkpoint-0000000 is saved; continue with:" in result.stderr
    partial = load_file(str(out / "checkpoints/checkpoint-0000000/method-rank0.safetensors"))
    assert "init_target" in partial  # the initialisation in progress, not a finished one
    monkeypatch.undo()
    result = invoke("distill", *args, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    a = load_file(str(tmp_path / "straight/student/diffusion_pytorch_model.safetensors"))
    b = load_file(str(out / "student/diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sample_writes_beside_the_runs_samples_png(run_copy, tmp_path):
    shipped = run_copy / "samples.png"
    shipped.write_bytes(b"the grid distill's evaluation wrote")
    result = invoke("sample", run_copy, "--n", "3", "--steps", "2", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert shipped.read_bytes() == b"the grid distill's evaluation wrote"
    assert (run_copy / "samples-3-7.png").is_file()
    result = invoke("sample", run_copy, "--n", "3", "--steps", "2", "--out", tmp_path / "mine.png")
    assert result.exit_code == 0 and (tmp_path / "mine.png").is_file()


def test_a_run_json_that_does_not_fit_leaves_no_temp_file(tmp_path):
    """write_atomic on a full disk: the error, and neither a half file nor its temp file."""
    with _small_tmpfs(tmp_path / "disk", "64k") as disk:
        from dkdm_zoo.runs.run import write_atomic

        (disk / "run.json").write_text("{}")
        with pytest.raises(OSError):
            write_atomic(disk / "run.json", "x" * 200_000)
        assert sorted(p.name for p in disk.iterdir()) == ["run.json"]
        assert (disk / "run.json").read_text() == "{}"
