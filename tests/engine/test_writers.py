"""One writer per run folder: a second `distill` on a folder another process writes is refused in
one line naming the holder's pid, and the first run finishes exactly as it would alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.runs.writer import HOLDER_NAME, LOCK_NAME
from tests.conftest import REPO, cli_env
from tests.methods.tiny import tiny_registry

MAIN = Path(__file__).with_name("torchrun_main.py")  # the real CLI over the tiny test registry
TINY = ["--teacher", "tiny", "--student", "tiny-unet", "--batch-size", "4", "--quiet"]
FAST = ["--set", "train.preview_every=0", "--set", "train.checkpoint_every=5"]


def distill_process(out: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(MAIN), "distill", *TINY, "--steps", str(steps), "--out", str(out), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=cli_env(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
    )


@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_first_finishes_as_if_alone(tmp_path):
    out = tmp_path / "run"
    first = distill_process(out, 12)
    deadline = time.monotonic() + 240
    while not (out / HOLDER_NAME).exists():  # the first writer holds the folder
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first writer never took the lock"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run, whatever the machine's speed
    try:
        second = subprocess.run(
            [
                sys.executable,
                str(MAIN),
                "distill",
                *TINY,
                "--steps",
                "12",
                "--out",
                str(out),
                *FAST,
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=cli_env(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
            timeout=300,
        )
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and f"(pid {first.pid} on " in second.stderr, second.stderr
    assert "is being written by another dkdm-zoo process" in second.stderr
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert not (out / LOCK_NAME).exists() and not (out / HOLDER_NAME).exists()  # released, removed

    solo = distill_process(tmp_path / "solo", 12)
    assert solo.wait(timeout=300) == 0, solo.communicate()
    a = load_file(str(next((out / "student").glob("*.safetensors"))))
    b = load_file(str(next((tmp_path / "solo/student").glob("*.safetensors"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_refusal_names_the_holder_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        create_app(tiny_registry()), ["distill", *TINY, "--steps", "2", "--out", str(out), *FAST]
    )
    assert result.exit_code == 0, result.output
    lock = FileLock(str(out / LOCK_NAME), timeout=0)
    lock.acquire()
    try:
        (out / HOLDER_NAME).write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "since": 0}))
        before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
        result = CliRunner().invoke(
            create_app(tiny_registry()),
            ["distill", *TINY, "--steps", "4", "--out", str(out), *FAST, "--resume"],
        )
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "(pid 4242 on gpu-node-7, since " in result.stderr
        result = CliRunner().invoke(create_app(tiny_registry()), ["export", str(out)])  # writes RUN/pipeline
        assert result.exit_code == 2 and "(pid 4242 on gpu-node-7" in result.stderr, result.output
        assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    finally:
        lock.release()
