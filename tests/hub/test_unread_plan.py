"""The dry-run's plan with the teacher's weights unread equals the plan with them read, on narrow
copies of SD 1.5, DiT-XL/2, SDXL and PixArt-Σ (teacher copies, a pruned copy, a LoRA)."""

from __future__ import annotations

import pytest

from dkdm_zoo.testing.hub_fixtures import DIT_XL_2_256, SD_V1_5
from dkdm_zoo.testing.sdxl_fixtures import PIXART_SIGMA, SDXL_BASE

from ..unread_plans import plans_unread_and_read
from .conftest import PROMPTS

CASES = {
    "sd15-sid-lora": (SD_V1_5, ["--method", "sid", "--lora", "4", PROMPTS]),
    "dit-dkdm-half": (DIT_XL_2_256, ["--method", "dkdm", "--student", "teacher", "--preset", "half"]),
    "sdxl-bk-small-features": (
        SDXL_BASE,
        ["--recipe", "sdxl-to-bk-dkdm", "--set", "train.activation_checkpointing=false", PROMPTS],
    ),
    "pixart-sid": (PIXART_SIGMA, ["--method", "sid", PROMPTS]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_with_weights_unread_is_the_plan_with_them_read(hub, modern, case, monkeypatch):
    repo, args = CASES[case]
    folder = hub.folder[repo] if repo in hub.folder else modern.folder[repo]
    command = ["distill", *args, "--teacher", str(folder), "--steps", "4", "--batch-size", "2"]
    unread, read = plans_unread_and_read(command, monkeypatch)
    assert unread["parameters"]["teacher"] > 0 and unread["memory_per_process_bytes"] > 0
    assert unread == read
