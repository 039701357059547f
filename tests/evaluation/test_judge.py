"""The data-free judge of prompt-conditioned students (`dkdm-zoo eval RUN --prompts FILE`), end to end
on the narrow SD 1.5 fixture with a 2-step SiD run, the CLIP model loaded from a hub cache by its
id (a narrow random-weight openai/clip-vit-large-patch14 written by transformers' own classes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.evaluation.clip import DEFAULT_CLIP_MODEL, load_clip
from dkdm_zoo.evaluation.judge import DEFAULT_PROMPTS_FILE, read_prompts
from dkdm_zoo.registry import build_registry

pytest.importorskip("transformers")

PROMPTS = "a cat sitting on a chair\n# a comment\n\na red fox in the snow\na dog running on the beach\n"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    from dkdm_zoo.testing.clip_fixture import build_clip_cache
    from dkdm_zoo.testing.hub_fixtures import build_sd15

    root = tmp_path_factory.mktemp("judge")
    (root / "prompts.txt").write_text(PROMPTS)
    return {
        "root": root,
        "sd15": build_sd15(root / "sd15"),
        "cache": build_clip_cache(root / "hub").parents[2],
        "prompts": root / "prompts.txt",
    }


@pytest.fixture
def offline(fixtures, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fixtures["cache"]))


def cli(*args: str):
    return CliRunner().invoke(create_app(build_registry(entry_points=False)), list(args))


@pytest.fixture(scope="module")
def two_step_run(fixtures):
    out = fixtures["root"] / "run"
    result = cli(
        "distill", "--teacher", str(fixtures["sd15"]), "--student", "unet", "--preset", "tiny",
        "--method", "sid", "--steps", "1", "--batch-size", "2", "--out", str(out),
        "--set", "method.generator_steps=2", "--set", f"teacher.prompts={fixtures['prompts']}",
        "--set", "train.preview_every=0", "--set", "train.final_eval_samples=0", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_the_clip_score_is_transformers_own(fixtures, offline):
    """By hub id from the cache: max(100 cos, 0) of CLIPModel's own embeddings (logits / logit scale)."""
    from transformers import CLIPModel, CLIPProcessor

    judge = load_clip(DEFAULT_CLIP_MODEL)
    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompts = ["a cat", "a red fox in the snow", "the sea at night"]
    ours = judge.scores(judge.image_features(images), judge.text_features(prompts))

    folder = Path(fixtures["cache"]) / "models--openai--clip-vit-large-patch14" / "snapshots"
    folder = next(folder.iterdir())
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    pixels = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    inputs = processor(text=prompts, images=list(pixels), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = out.logits_per_image.diag() / model.logit_scale.exp()
    torch.testing.assert_close(ours, (100 * cosine).clamp(min=0), rtol=1e-4, atol=1e-4)
    assert judge.feature_dim == 32


def test_a_two_step_student_is_judged_against_its_teacher(fixtures, offline, two_step_run, tmp_path):
    pytest.importorskip("torch_fidelity")
    from tests.evaluation.test_fid_inception import _random_inception_weights

    weights = tmp_path / "inception.safetensors"
    _random_inception_weights(weights)
    report = tmp_path / "judge.json"
    result = cli(
        "eval", str(two_step_run), "--prompts", str(fixtures["prompts"]), "--per-prompt", "2",
        "--teacher-steps", "3", "--json-out", str(report), "--inception-weights", str(weights),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["n_prompts"] == 3 and data["per_prompt"] == 2 and data["clip_model"] == DEFAULT_CLIP_MODEL
    assert data["student"]["nfe_per_image"] == 2 and data["teacher_samples"]["nfe_per_image"] == 3
    assert data["student"]["n"] == data["teacher_samples"]["n"] == 6
    assert data["fd"]["clip"] > 0 and data["fd"]["inception"] > 0  # different images
    assert [row["prompt"] for row in data["per_prompt_scores"]] == [
        "a cat sitting on a chair",
        "a red fox in the snow",
        "a dog running on the beach",
    ]
    for row in data["per_prompt_scores"]:
        grid = Image.open(row["grid"])
        # teacher | student, a row per image: 2 x 2 images of 8x8 latents -> 64x64 pixels, enlarged
        assert grid.size[0] >= 256 and grid.size[0] == grid.size[1]
    assert "--prompts" in data["command"] and "--per-prompt 2" in data["command"]


def test_a_teacher_judged_against_itself_has_no_gap(fixtures, offline, tmp_path):
    """Same prompts, same noise, same steps: identical images, FD 0, equal CLIP scores; the default
    paths of a teacher source and the shipped prompt set."""
    report = tmp_path / "self.json"
    result = cli(
        "eval", str(fixtures["sd15"]), "--prompts", "default", "--steps", "2", "--teacher-steps", "2",
        "--json-out", str(report), "--batch-size", "50",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["n_prompts"] == 100 and data["prompts_file"].startswith("default")
    assert data["fd"]["clip"] == pytest.approx(0.0, abs=1e-6)
    assert data["student"]["clip_score"] == pytest.approx(data["teacher_samples"]["clip_score"])
    assert "inception_skipped" in data or data["fd"]["inception"] is not None
    assert len(list((tmp_path / "self-grids").glob("*.png"))) == 100


def test_class_prompts_on_digits_dit(tmp_path):
    prompts = tmp_path / "digits.txt"
    prompts.write_text("3\n7\n")
    clip = tmp_path / "clip"
    from dkdm_zoo.testing.clip_fixture import build_clip

    build_clip(clip)
    report = tmp_path / "digits.json"
    result = cli(
        "eval", "digits-dit", "--prompts", str(prompts), "--clip-model", str(clip), "--steps", "2",
        "--teacher-steps", "2", "--json-out", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["fd"]["clip"] == pytest.approx(0.0, abs=1e-6) and data["n_prompts"] == 2
    (tmp_path / "bad.txt").write_text("3\nseven\n")
    result = cli("eval", "digits-dit", "--prompts", str(tmp_path / "bad.txt"), "--clip-model", str(clip))
    assert result.exit_code == 2 and "'seven' is not a class id" in result.output


def test_user_errors_are_one_line(fixtures, offline, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    cases = [
        (["--prompts", str(tmp_path / "absent.txt")], "no such file"),
        (["--prompts", str(empty)], "no prompts in it"),
        (["--prompts", str(fixtures["prompts"]), "--against", "data"], "drop --against data"),
        (["--prompts", str(fixtures["prompts"]), "--clip-model", str(fixtures["sd15"] / "unet")], "expected 'clip'"),
        (["--prompts", str(fixtures["prompts"]), "--clip-model", "org/absent-clip"], "not in the local"),
    ]  # fmt: skip
    for args, message in cases:
        result = cli("eval", str(fixtures["sd15"]), *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)


def test_the_shipped_prompts():
    prompts, name = read_prompts("default")
    assert len(prompts) == 100 == len(set(prompts)) and name.startswith("default")
    assert DEFAULT_PROMPTS_FILE.is_file()
