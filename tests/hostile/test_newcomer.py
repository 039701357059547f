"""What a newcomer sees first: readable previews, grayscale kept, no "loss nan", a CPU estimate,
and the student fields a --set may change."""

from __future__ import annotations

import math
import re

import pytest
from PIL import Image

from dkdm_zoo.engine.progress import TrainingProgress
from tests.hostile.conftest import FAST, TINY, invoke


def test_previews_of_small_grayscale_images_are_enlarged_and_stay_grayscale(tmp_path):
    out = tmp_path / "run"
    args = [
        "--set",
        "train.preview_every=2",
        "--set",
        "train.preview_samples=4",
        "--set",
        "train.preview_steps=2",
    ]
    result = invoke(
        "distill", *TINY, "--steps", "2", "--out", out, "--set", "train.log_every=1", "--quiet", *args
    )
    assert result.exit_code == 0, result.output
    preview = Image.open(out / "previews/step-0000002.png")
    assert preview.mode == "L" and preview.width >= 256
    assert preview.width == 2 + 2 * (8 * 16 + 2)  # 2 columns of 8x8 images enlarged 16x, nearest-neighbour
    pixels = preview.load()
    assert pixels[2, 2] == pixels[17, 17]  # one source pixel is a 16x16 block


def test_individual_grayscale_pngs_are_grayscale(finished_tiny, tmp_path):
    result = invoke(
        "sample",
        finished_tiny,
        "--n",
        "3",
        "--steps",
        "2",
        "--out",
        tmp_path / "g.png",
        "--individual",
        tmp_path / "ind",
    )
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "ind").glob("*.png"))
    assert len(files) == 3 and all(Image.open(f).mode == "L" and Image.open(f).size == (8, 8) for f in files)
    assert Image.open(tmp_path / "g.png").mode == "L"


def test_the_training_bar_shows_no_loss_until_one_exists():
    progress = TrainingProgress(enabled=False, total=10, start=0)
    progress.rate = 12.0
    assert progress.info() == "12.0 samples/s" and "nan" not in progress.info()
    progress.show_loss(0.25)
    assert progress.info() == "loss 0.2500  12.0 samples/s"
    progress.show_loss(math.nan)
    assert "nan" not in progress.info()


def test_the_dry_run_estimates_cpu_time_and_never_says_zero(tmp_path):
    result = invoke("distill", *TINY, "--steps", "10", "--out", tmp_path / "d", "--dry-run", *FAST)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "estimate on this CPU" in text and "fp32 matmul, measured" in text
    assert not re.search(r"(?<![\d.])0\.0 s", text)  # small runs in ms, not "0.0 s"
    assert re.search(r"this CPU .*: init [\d.]+ m?s, training [\d.]+ m?s \([\d.]+ m?s/step\)", text)


def test_info_lists_the_fields_a_set_may_change():
    result = invoke("info", "tiny-unet")
    assert result.exit_code == 0, result.output
    result = invoke("info", "unet", "--json")
    assert result.exit_code == 0, result.output
    import json

    fields = json.loads(result.output)["preset_fields"]
    assert fields["layers_per_block"] == ["an integer > 0", "tiny 1, small 2, base 3"]
    assert fields["dropout"][0] == "a finite number >= 0 and < 1"


def test_the_cards_wall_time_counts_the_pool_initialisation(tmp_path):
    """metrics.jsonl's start event records the set-up before it; the card's wall time includes it."""
    import json

    from dkdm_zoo.export.card import _training
    from dkdm_zoo.runs import Run

    out = tmp_path / "run"
    result = invoke(
        "distill", *TINY, "--steps", "2", "--out", out, *FAST, "--set", "method.pool_init=ancestral"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start, last = records[0], records[-1]
    assert start["event"] == "start" and start["setup_s"] > 0
    assert _training(Run(out))["wall_s"] == pytest.approx(last["time"] - start["time"] + start["setup_s"])
    assert (
        "| wall time (set-up, pool initialisation and training) |" in (out / "pipeline/README.md").read_text()
    )
