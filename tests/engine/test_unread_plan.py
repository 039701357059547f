"""`distill --dry-run` plans with the teacher's weights unread: the same plan as with them read, in
seconds, and a weight file it cannot read does not stop it (it is not opened)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dkdm_zoo.teachers.reference import asset_folder

from ..unread_plans import dry_run_json, plans_unread_and_read


@pytest.mark.parametrize(
    "args",
    [
        ["--recipe", "digits-ddpm-sid"],  # teacher copies: generator and fake score
        ["--recipe", "digits-ddpm-boot", "--lora", "4"],  # a LoRA on the teacher's own tensors
        ["--recipe", "digits-flow-sid", "--processes", "2", "--set", "train.sharding=fsdp"],
        ["--recipe", "quickstart"],  # a scratch student beside the teacher
    ],
    ids=["sid-teacher-copy", "boot-lora", "flow-sid-fsdp", "dkdm-scratch"],
)
def test_the_plan_with_weights_unread_is_the_plan_with_them_read(args, monkeypatch):
    unread, read = plans_unread_and_read(
        ["distill", *args, "--steps", "10", "--batch-size", "4"], monkeypatch
    )
    assert unread["memory_per_process_bytes"] > 0 and unread["flops"] > 0
    assert unread == read


def test_the_dry_run_never_opens_the_weights(tmp_path: Path):
    folder = tmp_path / "digits-ddpm"
    shutil.copytree(asset_folder("digits-ddpm"), folder)
    weights = sorted(folder.rglob("*.safetensors"))
    assert weights
    args = ["distill", "--teacher", str(folder), "--method", "sid", "--steps", "10", "--batch-size", "4"]
    intact = dry_run_json(args)
    for path in weights:  # not a safetensors file any more: any read of it fails
        path.write_bytes(b"not weights")
    assert dry_run_json(args) == intact
    for path in weights:  # missing weights are still refused before anything is planned
        path.unlink()
    from typer.testing import CliRunner

    from dkdm_zoo.cli.app import create_app
    from dkdm_zoo.registry import build_registry

    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), [*args, "--dry-run"])
    assert result.exit_code == 2 and "no weights" in result.output
