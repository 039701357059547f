"""Shared pieces of the adversarial suite: the tiny registry's CLI, a finished tiny run to copy, and
the one assertion every refusal must pass (exit code 2, one line on stderr, no traceback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from tests.methods.tiny import tiny_registry

TINY = ["--teacher", "tiny", "--student", "tiny-unet", "--batch-size", "4"]
FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]
EVERY_STEP = ["--set", "train.checkpoint_every=1"]


def invoke(*args: str, registry=None):
    return CliRunner().invoke(create_app(registry or tiny_registry()), [str(a) for a in args])


def refused(result, *needles: str) -> str:
    """A one-line refusal: exit code 2, one stderr line holding every needle, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    # one error line, last; before it only the line saying which checkpoint a resume started from
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert all(line.startswith("--resume: resuming from") for line in lines[:-1]), result.stderr
    err = lines[-1] + "\n"
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="session")
def finished_tiny(tmp_path_factory) -> Path:
    """A finished 2-step tiny run with a checkpoint at each step (copy it before changing it)."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    result = invoke("distill", *TINY, "--steps", "2", "--out", out, *EVERY_STEP, *FAST)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(finished_tiny, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_tiny, copy)
    return copy
