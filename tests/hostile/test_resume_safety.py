"""--resume refuses what it cannot honour, in one line, and never retrains silently over a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.hostile.conftest import FAST, TINY, invoke, refused


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_resume_with_its_checkpoints_deleted_refuses_and_says_what_is_there(run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    before = _files(run_copy)
    err = refused(invoke("distill", *TINY, "--steps", "2", "--out", run_copy, "--resume", *FAST))
    assert f"{run_copy} has no checkpoint to resume from" in err
    assert "metrics.jsonl (last logged step 2)" in err and "student/ (the run finished)" in err
    assert "--overwrite" in err
    assert _files(run_copy) == before  # no appended metrics, no rewritten pipeline


def test_an_empty_checkpoints_folder_is_no_checkpoint_either(run_copy):
    for child in (run_copy / "checkpoints").iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    refused(invoke("distill", "--out", run_copy, "--resume", *FAST), "checkpoints/ (empty)")


def test_a_recipe_edited_since_the_checkpoint_is_refused_then_allowed_and_recorded(run_copy):
    recipe = run_copy / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("batch_size = 4", "batch_size = 8"))
    refused(
        invoke("distill", "--out", run_copy, "--resume", "--steps", "3", *FAST),
        "train.batch_size 4 -> 8",
        "checkpoint-0000002/recipe.toml",
        "--allow-changes",
    )
    # the same change on the command line is refused the same way
    refused(
        invoke("distill", "--out", run_copy, "--resume", "--batch-size", "8", "--steps", "3", *FAST),
        "train.batch_size 4 -> 8",
    )
    result = invoke("distill", "--out", run_copy, "--resume", "--steps", "3", "--allow-changes", *FAST)
    assert result.exit_code == 0, result.output
    assert "allowed (--allow-changes): train.batch_size 4 -> 8" in result.stderr
    manifest = json.loads((run_copy / "run.json").read_text())
    assert manifest["allowed_changes"] == ["train.batch_size 4 -> 8"]
    assert json.loads((run_copy / "checkpoints/checkpoint-0000003/state.json").read_text())["step"] == 3


def test_allow_changes_without_resume_is_refused(tmp_path):
    refused(invoke("distill", *TINY, "--out", tmp_path / "x", "--allow-changes"), "--allow-changes")


def test_a_method_option_change_is_refused_on_resume(run_copy):
    refused(
        invoke("distill", "--out", run_copy, "--resume", "--set", "method.rho=0.5", "--steps", "3", *FAST),
        "method.rho",
    )


def _latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints/latest").read_text().strip()


def test_a_tampered_step_count_is_not_believed(run_copy):
    (_latest(run_copy) / "state.json").write_text(json.dumps({"step": 999, "world_size": 1}))
    result = invoke("distill", "--out", run_copy, "--resume", "--steps", "3", *FAST)
    assert result.exit_code == 0, result.output
    assert "state.json: step 999 is not the step of checkpoint-0000002" in result.stderr
    assert "resuming from checkpoint-0000001 (step 1)" in result.stderr


def _damage_every_checkpoint(run: Path, damage) -> None:
    for folder in (run / "checkpoints").glob("checkpoint-*"):
        damage(folder)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _folder_for(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _wrong_tensor_keys(path: Path) -> None:
    save_file({"not_a_weight": torch.zeros(3)}, str(path))


def _wrong_tensor_types(path: Path) -> None:
    state = load_file(str(path))
    save_file({k: v.to(torch.float64) if k == "torch" else v for k, v in state.items()}, str(path))


DAMAGES = {
    "state-json-string-step": (
        lambda f: _write(f / "state.json", '{"step": "2", "world_size": 1}'),
        "state.json",
    ),
    "state-json-a-list": (lambda f: _write(f / "state.json", "[1, 2]"), "state.json"),
    "method-state-empty": (
        lambda f: _write(f / "method-rank0.json", "{}"),
        "method-rank0.json: no teacher_forwards",
    ),
    "method-state-malformed": (lambda f: _write(f / "method-rank0.json", "{not json"), "method-rank0.json"),
    "method-state-wrong-type": (
        lambda f: _write(
            f / "method-rank0.json",
            (f / "method-rank0.json")
            .read_text()
            .replace('"teacher_calls": ', '"teacher_calls": "x", "was": '),
        ),
        "method-rank0.json",
    ),
    "weights-wrong-keys": (lambda f: _wrong_tensor_keys(f / "student.safetensors"), "student.safetensors"),
    "weights-a-folder": (lambda f: _folder_for(f / "student.safetensors"), "student.safetensors"),
    "optimizer-a-folder": (lambda f: _folder_for(f / "optimizer.pt"), "optimizer.pt"),
    "optimizer-garbage": (lambda f: (f / "optimizer.pt").write_bytes(b"\x80\x04garbage"), "optimizer.pt"),
    "lr-schedule-a-list": (lambda f: _write(f / "lr_schedule.json", "[]"), "lr_schedule.json"),
    "ema-wrong-keys": (lambda f: _wrong_tensor_keys(f / "ema.safetensors"), "ema.safetensors"),
    "rng-wrong-dtype": (lambda f: _wrong_tensor_types(f / "rng-rank0.safetensors"), "rng-rank0.safetensors"),
    "rng-missing": (lambda f: (f / "rng-rank0.safetensors").unlink(), "rng-rank0.safetensors"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_tampered_checkpoint_is_one_line_naming_the_file(run_copy, damage):
    act, named = DAMAGES[damage]
    _damage_every_checkpoint(run_copy, act)
    err = refused(
        invoke("distill", "--out", run_copy, "--resume", "--steps", "3", *FAST), "no readable checkpoint"
    )
    assert named in err and "checkpoint-0000002" in err and "checkpoint-0000001" in err
    assert not (run_copy / "checkpoints/checkpoint-0000003").exists()


def test_only_the_damaged_checkpoint_is_skipped(run_copy):
    act, _ = DAMAGES["method-state-empty"]
    act(_latest(run_copy))
    result = invoke("distill", "--out", run_copy, "--resume", "--steps", "3", *FAST)
    assert result.exit_code == 0, result.output
    assert "checkpoint-0000002 is unreadable (method-rank0.json: no teacher_forwards" in result.stderr
