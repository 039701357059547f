"""The dry-run's plan with the teacher's weights unread equals the plan with them read, on narrow
copies of SD3.5-medium, FLUX.1-dev and SANA (T5 and Gemma encoders with their masks, packed latents)."""

from __future__ import annotations

import pytest

from dkdm_zoo.testing.flow_hub_configs import FLUX_DEV, SANA_1600M, SD35_MEDIUM

from ..unread_plans import plans_unread_and_read
from .conftest import REPO_SETTINGS, TEACHER_SETTINGS

CASES = {
    "sd3-sid": (SD35_MEDIUM, ["--method", "sid"]),
    "flux-dev-sid-lora": (FLUX_DEV, ["--method", "sid", "--lora", "4"]),
    "sana-dkdm-teacher": (SANA_1600M, ["--method", "dkdm", "--student", "teacher"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_with_weights_unread_is_the_plan_with_them_read(flow_hub, case, monkeypatch):
    repo, args = CASES[case]
    command = ["distill", *args, "--teacher", str(flow_hub.folder[repo]), "--steps", "4", "--batch-size", "2"]
    command += TEACHER_SETTINGS + REPO_SETTINGS.get(repo, [])
    unread, read = plans_unread_and_read(command, monkeypatch)
    assert unread["parameters"]["teacher"] > 0 and unread["memory_per_process_bytes"] > 0
    assert unread == read


@pytest.mark.parametrize(
    ("recipe", "repo"),
    [("flux-dev-to-one-step-sid", FLUX_DEV), ("sd35-large-to-one-step-sid", SD35_MEDIUM)],
)
def test_the_large_flow_recipes_plan_on_narrow_layouts(flow_hub, offline_flow_cache, recipe, repo):
    """The shipped FLUX.1-dev and SD3.5-large SiD LoRA recipes, on the narrow FLUX.1-dev (by its hub
    id, from the cache) and SD3.5-medium (the same pipeline class) layouts."""
    from ..unread_plans import dry_run_json

    where = [] if repo == FLUX_DEV else ["--set", f"teacher.path={flow_hub.folder[repo]}"]
    plan = dry_run_json(
        ["distill", "--recipe", recipe, *where, *TEACHER_SETTINGS[1:], *REPO_SETTINGS.get(repo, [])]
    )
    assert plan["method"] == "sid" and plan["sharding"] == "ddp"
    assert plan["details"]["trainable_parameters"] < plan["details"]["frozen_parameters"]  # a LoRA
    assert plan["verdict"].startswith("fits 1 x 80 GB (H100)")
