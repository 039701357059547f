"""Every command that takes a teacher, on every real layout: by folder, by hub id from the HF cache
(HF_HUB_OFFLINE=1), and with the family named or auto-detected."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from dkdm_zoo.testing.hub_fixtures import BUILDERS, DDPM_CIFAR10, SD_V1_5
from tests.conftest import cli_env, run_cli, strip_ansi

from .conftest import FAMILIES, PROMPTS

WAYS = ("folder", "hub id", "FAMILY@hub id")
CASES = [(repo, way) for repo in BUILDERS for way in WAYS]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), list(args))
    return result.exit_code, strip_ansi(result.stdout), strip_ansi(result.stderr)


def teacher_arg(hub, repo: str, way: str) -> str:
    if way == "folder":
        return str(hub.folder[repo])
    return repo if way == "hub id" else f"{FAMILIES[repo]}@{repo}"


def detected_line(repo: str, way: str, source: str) -> str | None:
    return None if way == "FAMILY@hub id" else f"teacher {source}: family '{FAMILIES[repo]}'"


def check_announce(stderr: str, repo: str, way: str, source: str) -> None:
    line = detected_line(repo, way, source)
    if line is None:
        assert "family '" not in stderr
    else:
        assert line in stderr, stderr


@pytest.mark.parametrize(("repo", "way"), CASES)
def test_distill_dry_run(hub, offline_cache, repo, way):
    source = teacher_arg(hub, repo, way)
    extra = [PROMPTS] if repo == SD_V1_5 else []
    code, out, err = invoke(
        "distill", "--teacher", source, "--student", "unet", "--preset", "tiny", "--dry-run", *extra
    )
    assert code == 0, err
    assert re.search(rf"^teacher  {FAMILIES[repo]}  [\d,]+ parameters", out, re.M), out
    check_announce(err, repo, way, source)


@pytest.mark.parametrize(("repo", "way"), CASES)
def test_info_student_for_the_teacher(hub, offline_cache, repo, way):
    source = teacher_arg(hub, repo, way)
    code, out, err = invoke("info", "unet", "--teacher", source, "--preset", "tiny", "--json")
    assert code == 0, err
    built = json.loads(out)["built_for_teacher"]
    assert built["family"] == FAMILIES[repo] and built["parameters"] > 0
    if repo == SD_V1_5:  # a run needs prompts: info says so, in the command-line form
        assert "latent-sd" in built["run_check"] and "--set 'teacher.prompts=[" in built["run_check"]
    else:
        assert built["run_check"] == "ok"
    check_announce(err, repo, way, source)


@pytest.mark.parametrize(("repo", "way"), CASES)
def test_sample_and_eval(hub, offline_cache, tmp_path, repo, way):
    source = teacher_arg(hub, repo, way)
    extra = ["--prompt", "a cat sitting on a chair"] if repo == SD_V1_5 else []
    out_png = tmp_path / "grid.png"
    code, out, err = invoke("sample", source, "--n", "2", "--steps", "2", "--out", str(out_png), *extra)
    assert code == 0, err
    size = 32 if repo == DDPM_CIFAR10 else 64  # CIFAR pixels; narrow latents 8x8 through an 8x VAE
    assert f"wrote 2 images to {out_png} ({size}x{size} each)" in out
    assert Image.open(out_png).size == (2 * (size + 2) + 2, size + 4)
    check_announce(err, repo, way, source)
    # eval loads the teacher, then refuses RGB images (its evaluator is the 1-channel digits one)
    code, out, err = invoke("eval", source, "--n", "2", "--steps", "2")
    assert code == 2 and "3-channel images: the built-in evaluator is for the 1-channel digits" in err


@pytest.mark.parametrize("repo", list(BUILDERS))
def test_two_training_steps_from_an_auto_detected_folder(hub, tmp_path, repo):
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(hub.folder[repo]), "--student", "unet", "--preset", "tiny"]
    args += ["--steps", "2", "--batch-size", "2", "--out", str(out), "--quiet"]
    for setting in (
        "method.rho=0.001",  # round(0.001 * 1000) * 2 = 2 pool slots
        "method.pool_init=ddim",
        "method.pool_init_steps=2",
        "train.preview_samples=2",
        "train.preview_steps=2",
        "train.checkpoint_every=0",
    ):
        args += ["--set", setting]
    code, _, err = invoke(*args, *([PROMPTS] if repo == SD_V1_5 else []))
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["teacher"]["name"] == FAMILIES[repo]
    assert manifest["teacher"]["options"]["path"] == str(hub.folder[repo])
    assert (out / "student" / "config.json").is_file()
    previews = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    previews = [r for r in previews if r.get("event") == "preview"]
    assert [(r["step"], r["samples"]) for r in previews] == [(2, 2)] and previews[0]["wall_s"] > 0
    assert (out / "previews").is_dir() and any((out / "previews").iterdir())


@pytest.mark.parametrize(
    ("recipe", "family"), [("dit-xl2-to-small-dit", "dit"), ("sd-to-small-latent-unet", "latent-sd")]
)
def test_hub_recipes_dry_run_from_the_cache(hub, offline_cache, recipe, family):
    code, out, err = invoke("distill", "--recipe", recipe, "--dry-run")
    assert code == 0, err
    assert re.search(rf"^teacher  {family}  [\d,]+ parameters", out, re.M)


def test_text_teacher_without_prompts_fails_the_dry_run_in_one_line(hub, offline_cache):
    code, out, err = invoke("distill", "--teacher", SD_V1_5, "--student", "unet", "--dry-run")
    assert code == 2
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--set 'teacher.prompts=[" in error[0] and "[teacher]" in error[0]


def test_the_paper_recipe_dry_runs_from_a_cache_holding_the_flat_repo(hub, tmp_path):
    """The headline command, in a fresh process with HF_HOME and HF_HUB_OFFLINE from the environment."""
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "hub").symlink_to(hub.cache, target_is_directory=True)
    env = {k: v for k, v in cli_env().items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    result = run_cli(
        "distill",
        "--teacher",
        "ddpm-unet@google/ddpm-cifar10-32",
        "--recipe",
        "cifar10-unet14m",
        "--dry-run",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(hub.snapshot[DDPM_CIFAR10])
    parameters = sum(p.numel() for p in unet.parameters())
    assert f"teacher  ddpm-unet  {parameters:,} parameters" in result.stdout
    assert "pool_slots = 51,200" in result.stdout  # rho 0.4 x T 1000 x batch 128, the paper's pool


def test_unknown_pipeline_class_on_the_command_line(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    code, _, err = invoke("sample", str(tmp_path))
    assert code == 2 and "KandinskyPipeline" in err and "latent-sd" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_info_shows_what_a_family_detects():
    code, out, _ = invoke("info", "dit")
    assert code == 0 and re.search(r"detects\s+DiTPipeline, DiTTransformer2DModel, Transformer2DModel", out)
