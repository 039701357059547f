"""Bad inputs, as an adversarial user types them: each is refused with exit code 2 and ONE line on
stderr (no traceback), quoting brackets literally, and nothing on disk is created or changed.

Add a case to CASES for every new way a user can get a command wrong.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from tests.methods.tiny import tiny_registry

TINY = ["--teacher", "tiny", "--student", "tiny-unet", "--steps", "2", "--batch-size", "4"]
FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(create_app(tiny_registry()), list(args))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (2 steps, a checkpoint at each step): copied by each test that uses it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = invoke("distill", *TINY, "--out", str(out), "--set", "train.checkpoint_every=1", *FAST)
    assert result.exit_code == 0, result.output
    return out


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass
class Case:
    """``args`` builds the command line from (a scratch folder, a private copy of a finished run)."""

    id: str
    args: Callable[[Path, Path], list[str]]
    needle: str
    setup: Callable[[Path, Path], None] = field(default=lambda tmp, run: None)


def _student_weights(run: Path) -> Path:
    return next((run / "student").glob("*.safetensors"))


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


RECIPE = '[teacher]\nname = "tiny"\n[student]\nname = "tiny-unet"\n[train]\nsteps = 2\nbatch_size = 4\n'

CASES = [
    # -- where a run goes ---------------------------------------------------------------------------
    Case(
        "out-is-a-file",
        lambda tmp, run: ["distill", *TINY, "--out", str(tmp / "file.txt")],
        "is a file: pass a folder",
        lambda tmp, run: _write(tmp / "file.txt", "x"),
    ),
    Case(
        "out-under-a-file",
        lambda tmp, run: ["distill", *TINY, "--out", str(tmp / "file.txt" / "run")],
        "file.txt is a file, not a folder",
        lambda tmp, run: _write(tmp / "file.txt", "x"),
    ),
    Case(  # /sys refuses new folders even to root, as an unwritable folder does to a user
        "out-unwritable",
        lambda tmp, run: ["distill", *TINY, "--out", "/sys/dkdm-zoo-run"],
        "cannot create the run folder /sys/dkdm-zoo-run",
    ),
    Case(
        "out-not-empty",
        lambda tmp, run: ["distill", *TINY, "--out", str(tmp / "full")],
        "exists and is not empty",
        lambda tmp, run: _write(tmp / "full" / "notes.txt", "mine"),
    ),
    Case(
        "overwrite-not-a-run",
        lambda tmp, run: ["distill", *TINY, "--out", str(tmp / "full"), "--overwrite"],
        "does not look like a run folder",
        lambda tmp, run: _write(tmp / "full" / "notes.txt", "mine"),
    ),
    Case(
        "resume-not-a-run",
        lambda tmp, run: ["distill", *TINY, "--out", str(tmp / "nothing"), "--resume"],
        "is not a run folder (no recipe.toml)",
    ),
    # -- recipes ------------------------------------------------------------------------------------
    Case(
        "recipe-not-utf8",
        lambda tmp, run: ["distill", "--recipe", str(tmp / "latin1.toml")],
        "is not UTF-8 text (byte 0xe9",
        lambda tmp, run: _write(tmp / "latin1.toml", '[recipe]\nname = "caf\xe9"\n'.encode("latin-1")),
    ),
    Case(
        "recipe-is-a-folder",
        lambda tmp, run: ["distill", "--recipe", str(tmp / "recipes")],
        "is a folder, not a recipe file",
        lambda tmp, run: (tmp / "recipes").mkdir(),
    ),
    Case(
        "recipe-missing-section",  # brackets are printed, not eaten as markup
        lambda tmp, run: ["distill", "--recipe", str(tmp / "r.toml")],
        "missing section [teacher]",
        lambda tmp, run: _write(tmp / "r.toml", '[student]\nname = "tiny-unet"\n'),
    ),
    Case(
        "recipe-bad-train-type",
        lambda tmp, run: ["distill", "--recipe", str(tmp / "r.toml"), "--out", str(tmp / "o")],
        "train.steps = 'ten' is not an integer > 0",
        lambda tmp, run: _write(tmp / "r.toml", RECIPE.replace("steps = 2", 'steps = "ten"')),
    ),
    # -- option values ------------------------------------------------------------------------------
    Case(
        "method-rho-abc",
        lambda tmp, run: ["distill", *TINY, "--set", "method.rho=abc"],
        "--set: method.rho = 'abc' is not a finite number",
    ),
    Case(
        "method-kl-weight-abc",
        lambda tmp, run: ["distill", *TINY, "--set", "method.kl_weight=abc"],
        "--set: method.kl_weight = 'abc' is not a finite number",
    ),
    Case(
        "method-unknown-key",
        lambda tmp, run: ["distill", *TINY, "--set", "method.rhoo=0.3"],
        "unknown key 'method.rhoo' for method 'dkdm' (did you mean 'rho'?)",
    ),
    Case(
        "teacher-guidance-abc",
        lambda tmp, run: [
            "distill",
            "--teacher",
            "digits-ddpm",
            "--student",
            "tiny-unet",
            "--set",
            "teacher.guidance_scale=abc",
        ],
        "--set: teacher.guidance_scale = 'abc' is not a finite number, or unset",
    ),
    Case(
        "teacher-allow-pickle-not-a-bool",
        lambda tmp, run: [
            "distill",
            "--teacher",
            f"ddpm-unet@{tmp}",
            "--student",
            "tiny-unet",
            "--set",
            "teacher.allow_pickle=maybe",
        ],
        "--set: teacher.allow_pickle = 'maybe' is not true or false",
    ),
    Case(
        "train-lr-nan",
        lambda tmp, run: ["distill", *TINY, "--set", "train.lr=nan"],
        "--set train.lr=nan: train.lr = nan is not a finite number > 0",
    ),
    Case(
        "train-lr-inf",
        lambda tmp, run: ["distill", *TINY, "--set", "train.lr=inf"],
        "train.lr = inf is not a finite number > 0",
    ),
    Case(
        "train-ema-out-of-range",
        lambda tmp, run: ["distill", *TINY, "--set", "train.ema_decay=1.5"],
        "train.ema_decay = 1.5 is not a finite number >= 0 and < 1",
    ),
    Case(
        "train-steps-flag-zero",
        lambda tmp, run: ["distill", *TINY[:-4], "--steps", "0", "--batch-size", "4"],
        "--steps: train.steps = 0 is not an integer > 0",
    ),
    Case(
        "student-widths-abc",  # fails while building the student: the folder is restored
        lambda tmp, run: [
            "distill",
            *TINY,
            "--out",
            str(tmp / "new"),
            "--set",
            "student.block_out_channels=abc",
        ],
        "student.block_out_channels = 'abc' is not a list of integers > 0",
    ),
    Case(
        "student-depth-zero",
        lambda tmp, run: [
            "distill",
            *TINY,
            "--out",
            str(tmp / "new"),
            "--set",
            "student.layers_per_block=0",
        ],
        "student.layers_per_block = 0 is not an integer > 0",
    ),
    Case(
        "set-without-dot",
        lambda tmp, run: ["distill", *TINY, "--set", "rho=0.3"],
        "expected section.key=value",
    ),
    Case(
        "usage-error-is-one-line",
        lambda tmp, run: ["sample", str(run), "--n", "abc"],
        "Invalid value for '--n'",
    ),
    Case(
        "unknown-option",
        lambda tmp, run: ["distill", "--stepz", "3"],
        "No such option: --stepz",
    ),
    # -- sample / eval outputs ------------------------------------------------------------------------
    Case(
        "sample-out-unknown-format",
        lambda tmp, run: ["sample", str(run), "--n", "2", "--steps", "1", "--out", str(tmp / "x.xyz")],
        ".xyz is not an image format",
    ),
    Case(
        "sample-out-is-a-folder",
        lambda tmp, run: ["sample", str(run), "--n", "2", "--steps", "1", "--out", str(tmp)],
        "is a folder: pass a file name",
    ),
    Case(
        "sample-individual-is-a-file",
        lambda tmp, run: [
            "sample",
            str(run),
            "--n",
            "2",
            "--steps",
            "1",
            "--out",
            str(tmp / "g.png"),
            "--individual",
            str(tmp / "file.txt"),
        ],
        "--individual",
        lambda tmp, run: _write(tmp / "file.txt", "x"),
    ),
    Case(
        "eval-json-out-is-a-folder",
        lambda tmp, run: ["eval", str(run), "--n", "2", "--json-out", str(tmp)],
        "--json-out",
    ),
    # -- corrupt run folders ------------------------------------------------------------------------
    Case(
        "sample-truncated-student",
        lambda tmp, run: ["sample", str(run), "--n", "2", "--steps", "1", "--out", str(tmp / "g.png")],
        "diffusion_pytorch_model.safetensors is unreadable",
        lambda tmp, run: truncate(_student_weights(run)),
    ),
    Case(
        "eval-truncated-student",
        lambda tmp, run: ["eval", str(run), "--n", "2", "--json-out", str(tmp / "e.json")],
        "diffusion_pytorch_model.safetensors is unreadable",
        lambda tmp, run: truncate(_student_weights(run)),
    ),
    Case(
        "export-truncated-student",
        lambda tmp, run: ["export", str(run), str(tmp / "pipe")],
        "diffusion_pytorch_model.safetensors is unreadable",
        lambda tmp, run: truncate(_student_weights(run)),
    ),
    Case(
        "run-teacher-truncated-student",
        lambda tmp, run: ["distill", "--teacher", f"run@{run}", "--student", "tiny-unet", "--dry-run"],
        "diffusion_pytorch_model.safetensors is unreadable",
        lambda tmp, run: truncate(_student_weights(run)),
    ),
    Case(
        "corrupt-run-json",
        lambda tmp, run: ["sample", str(run), "--n", "2", "--out", str(tmp / "g.png")],
        "run.json",
        lambda tmp, run: _write(run / "run.json", '{"format_version": 1, "teacher": '),
    ),
    Case(
        "corrupt-student-config",
        lambda tmp, run: ["sample", str(run), "--n", "2", "--out", str(tmp / "g.png")],
        "config.json",
        lambda tmp, run: _write(run / "student" / "config.json", "{not json"),
    ),
    Case(
        "corrupt-recipe-on-resume",
        lambda tmp, run: ["distill", "--out", str(run), "--resume", "--steps", "3"],
        "recipe.toml: invalid TOML",
        lambda tmp, run: _write(run / "recipe.toml", "[train\nsteps = "),
    ),
    Case(
        "corrupt-metrics-on-export",
        lambda tmp, run: ["export", str(run), str(tmp / "pipe")],
        "metrics.jsonl:1 is not a JSON record",
        lambda tmp, run: _write(run / "metrics.jsonl", "{broken\n{}\n"),
    ),
    # -- resume -------------------------------------------------------------------------------------
    Case(
        "resume-changes-what-a-checkpoint-fixes",
        lambda tmp, run: [
            "distill",
            *TINY,
            "--out",
            str(run),
            "--resume",
            "--set",
            "train.batch_size=8",
            "--set",
            "method.rho=0.3",
            *FAST,
        ],
        "cannot change method.rho (unset) -> 0.3, train.batch_size 4 -> 8",
    ),
    Case(
        "resume-another-teacher",
        lambda tmp, run: ["distill", "--teacher", "digits-ddpm", "--out", str(run), "--resume"],
        "cannot change teacher.name 'tiny' -> 'digits-ddpm'",
    ),
]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                stat = path.lstat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns if path.is_file() else 0)
    return files


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case: Case, finished_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    case.setup(scratch, run)
    monkeypatch.chdir(scratch)  # default outputs (runs/..., samples-*.png) would land here
    before = snapshot(tmp_path)
    result = invoke(*case.args(scratch, run))
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and err.count("\n") == 1, err
    assert err.startswith("error: ") and case.needle in err, err
    assert snapshot(tmp_path) == before, "the failed command created or changed files"


def test_cases_cover_the_issue_list():
    """The bad inputs issue 14 listed, each by its case id (the list only grows)."""
    ids = {c.id for c in CASES}
    assert {
        "out-is-a-file",
        "out-unwritable",
        "recipe-not-utf8",
        "recipe-is-a-folder",
        "method-rho-abc",
        "teacher-guidance-abc",
        "train-lr-nan",
        "sample-out-unknown-format",
        "sample-individual-is-a-file",
        "sample-truncated-student",
        "run-teacher-truncated-student",
        "method-kl-weight-abc",
        "student-widths-abc",
        "teacher-allow-pickle-not-a-bool",
    } <= ids


def test_run_json_with_a_bad_option_value_names_the_file(finished_run, tmp_path):
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.runs import Run
    from dkdm_zoo.runs.student import original_teacher

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = json.loads((run / "run.json").read_text())
    data["teacher"]["options"]["learned"] = "yes please"
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        original_teacher(Run(run), tiny_registry())
    assert str(info.value) == f"{run / 'run.json'}: teacher.learned = 'yes please' is not true or false"
