"""`dkdm-zoo sample` and `dkdm-zoo eval` on tiny teachers and runs, and `train.final_eval_samples`
(run by `distill`, which then refreshes the pipeline's model card)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from tests.conftest import run_cli, strip_ansi
from tests.test_generation import distill_run, save_teacher

torch.set_num_threads(1)  # tiny models on a shared CPU


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(build_registry()), list(args))
    return result.exit_code, strip_ansi(result.output)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def grid_size(n: int, size: int = 8, padding: int = 2) -> tuple[int, int]:
    """make_grid's (width, height): nrow = ceil(sqrt(n)) columns of size + padding, plus padding."""
    nrow = math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    return nrow * (size + padding) + padding, rows * (size + padding) + padding


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def data_run(tmp_path_factory, teacher_dir):
    """A `data` run with a real teacher and the end-of-run evaluation on."""
    return distill_run(
        tmp_path_factory.mktemp("runs") / "data", teacher_dir, "data", "--set", "train.final_eval_samples=16"
    )


@pytest.fixture(scope="module")
def boot_run(tmp_path_factory, teacher_dir):
    return distill_run(tmp_path_factory.mktemp("runs") / "boot", teacher_dir, "boot")


def test_final_eval_samples_writes_eval_json_and_a_grid(data_run):
    # first in this file: later tests write other grids into the run folder
    report = json.loads((data_run / "eval.json").read_text())
    assert report["n"] == 16 and set(report["models"]) == {"student", "teacher (ddpm-unet)"}
    for model in report["models"].values():
        assert all(math.isfinite(model["metrics"][k]) for k in ("fd", "precision", "recall"))
    assert Image.open(data_run / "samples.png").size == grid_size(16)
    assert pixels(data_run / "samples.png").std() > 0
    # distill refreshed the pipeline's model card after the evaluation: metrics and the grid are in it
    card = (data_run / "pipeline/README.md").read_text()
    assert "## Quality" in card and f"{report['models']['student']['metrics']['fd']:.3f}" in card
    assert "![samples of the student](samples.png)" in card and (data_run / "pipeline/samples.png").is_file()


def test_sample_from_a_teacher_name_writes_a_grid(teacher_dir, tmp_path):
    out = tmp_path / "grid.png"
    code, output = invoke(
        "sample",
        "ddpm-unet",
        "--teacher-path",
        str(teacher_dir),
        "--n",
        "9",
        "--steps",
        "4",
        "--out",
        str(out),
    )
    assert code == 0, output
    assert Image.open(out).size == grid_size(9)
    assert f"wrote 9 images to {out}" in output
    assert "4 network evaluation(s) per image" in output and "ms per image" in output
    assert pixels(out).std() > 0  # not a blank image


def test_sample_default_path_and_seeds(teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = invoke("sample", f"ddpm-unet@{teacher_dir}", "--n", "4", "--steps", "3", "--seed", "5")
    assert code == 0, output
    first = pixels(tmp_path / "samples-ddpm-unet.png")
    code, _ = invoke(
        "sample", f"ddpm-unet@{teacher_dir}", "--n", "4", "--steps", "3", "--seed", "5", "--out", "b.png"
    )
    code2, _ = invoke(
        "sample", f"ddpm-unet@{teacher_dir}", "--n", "4", "--steps", "3", "--seed", "6", "--out", "c.png"
    )
    assert code == code2 == 0
    assert np.array_equal(first, pixels(tmp_path / "b.png"))
    assert not np.array_equal(first, pixels(tmp_path / "c.png"))


def test_sample_a_multi_step_run_with_individual_files(data_run, tmp_path):
    shipped = (data_run / "samples.png").read_bytes()
    code, output = invoke(
        "sample",
        str(data_run),
        "--n",
        "5",
        "--steps",
        "3",
        "--sampler",
        "ddpm",
        "--individual",
        str(tmp_path / "ind"),
    )
    assert code == 0, output
    # the default path sits beside the samples.png of distill's evaluation (which export ships): never over it
    assert Image.open(data_run / "samples-5-0.png").size == grid_size(5)
    assert (data_run / "samples.png").read_bytes() == shipped
    files = sorted((tmp_path / "ind").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(5)]
    assert all(Image.open(f).size == (8, 8) for f in files)
    assert "3 network evaluation(s) per image (ddpm)" in output


def test_sample_a_one_step_run(boot_run, tmp_path):
    code, output = invoke(
        "sample", str(boot_run), "--n", "4", "--steps", "50", "--out", str(tmp_path / "g.png")
    )
    assert code == 0, output
    assert "1 network evaluation(s) per image (one-step)" in output
    assert Image.open(tmp_path / "g.png").size == grid_size(4)


def test_labels_for_an_unconditional_teacher_is_a_one_line_error(teacher_dir, tmp_path):
    result = run_cli(
        "sample",
        f"ddpm-unet@{teacher_dir}",
        "--labels",
        "1,2",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert result.returncode == 2
    err = strip_ansi(result.stderr).strip()
    assert len(err.splitlines()) == 1 and "takes no class labels" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_eval_against_data_and_teacher_writes_json(data_run, tmp_path):
    for against in ("data", "teacher"):
        code, output = invoke(
            "eval", str(data_run), "--against", against, "--n", "12", "--steps", "3", "--teacher-steps", "2"
        )
        assert code == 0, output
        report = json.loads((data_run / f"eval-{against}.json").read_text())
        assert report["against"] == against and report["n"] == 12 and report["steps"] == 3
        assert report["seed"] == 0 and report["wall_s"] > 0
        assert report["command"] == (
            f"dkdm-zoo eval {data_run} --against {against} --n 12 --steps 3 --teacher-steps 2"
            if against == "teacher"
            else f"dkdm-zoo eval {data_run} --n 12 --steps 3 --teacher-steps 2"
        )
        for key in ("fd", "precision", "recall"):
            assert math.isfinite(report["metrics"][key])
        assert "FD" in output and "precision" in output and "wrote" in output
    assert report["teacher"]["name"] == "ddpm-unet" and report["teacher"]["steps"] == 2
    assert report["metrics"]["n_reference"] == 12  # the teacher's samples, not the digits


def test_eval_of_a_class_conditional_teacher_reports_each_class(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = save_teacher(tmp_path / "cls", num_classes=3)
    code, output = invoke("eval", f"ddpm-unet@{folder}", "--n", "9", "--steps", "2")
    assert code == 0, output
    report = json.loads((tmp_path / "eval-ddpm-unet-data.json").read_text())
    assert set(report["metrics"]["per_class_accuracy"]) == {"0", "1", "2"}
    assert "accuracy per class" in output


def test_eval_of_a_teacher_against_teacher_compares_with_itself_at_teacher_steps(teacher_dir, tmp_path):
    def report(steps: str) -> dict:
        out = tmp_path / f"eval-{steps}.json"
        code, output = invoke(
            "eval", f"ddpm-unet@{teacher_dir}", "--against", "teacher", "--n", "16", "--steps", steps,
            "--teacher-steps", "3", "--json-out", str(out),
        )  # fmt: skip
        assert code == 0, output
        return json.loads(out.read_text())

    same, other = report("3"), report("1")
    # Deterministic DDIM from the same noise: the samples ARE the reference.
    assert same["teacher"]["steps"] == 3 and same["metrics"]["fd"] < 1e-6
    assert same["metrics"]["precision"] == 1.0 and same["metrics"]["recall"] == 1.0
    assert other["metrics"]["fd"] > 1e-3


def test_eval_user_errors(teacher_dir, tmp_path):
    rgb = save_teacher(tmp_path / "rgb", channels=3)
    code, output = invoke("eval", f"ddpm-unet@{rgb}", "--n", "8", "--steps", "1")
    assert code == 2 and "digits benchmark" in output and "fid_inception" in output


@pytest.mark.parametrize("method", ["dkdm", "sid"])
def test_sample_and_eval_a_lora_run(tmp_path, method):
    """A LoRA run saves its adapters only: sampling attaches its teacher's network as the base before the
    student is moved (a multi-step run is read as a RunTeacher, a one-step generator as itself)."""
    run = tmp_path / "run"
    fast = ["--steps", "2", "--batch-size", "2", "--quiet", "--set", "train.preview_every=0",
            "--set", "train.final_eval_samples=0", "--set", "train.lr=0.01"]  # fmt: skip
    tiny = [
        "--set",
        "method.rho=0.001",
        "--set",
        "method.pool_init=ddim",
        "--set",
        "method.pool_init_steps=1",
    ]
    code, out = invoke("distill", "--teacher", "digits-ddpm", "--method", method, "--lora", "2", "--out", str(run),
                       *fast, *(tiny if method == "dkdm" else []))  # fmt: skip
    assert code == 0, out
    code, out = invoke("sample", str(run), "--n", "4", "--steps", "2", "--out", str(tmp_path / "s.png"))
    assert code == 0, out
    assert Image.open(tmp_path / "s.png").size == grid_size(4)
    code, out = invoke("eval", str(run), "--against", "teacher", "--n", "16", "--steps", "2", "--teacher-steps", "2",
                       "--json-out", str(tmp_path / "e.json"))  # fmt: skip
    assert code == 0, out
    assert math.isfinite(json.loads((tmp_path / "e.json").read_text())["metrics"]["fd"])
