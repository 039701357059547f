"""`distill --dry-run --json`: the plan as one JSON object on stdout, the same numbers the text plan prints."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry

ARGS = ["distill", "--recipe", "quickstart", "--dry-run", "--steps", "40", "--batch-size", "16"]


def test_the_dry_run_plan_as_json_agrees_with_the_text_plan():
    app = create_app(build_registry(entry_points=False))
    result = CliRunner().invoke(app, [*ARGS, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["sharding"] == "ddp" and plan["batch_size_per_process"] == 16 and plan["steps"] == 40
    assert plan["teacher_forwards"] == plan["teacher_forwards_init"] + plan["teacher_forwards_training"]
    assert plan["teacher_forwards_training"] == 40 * 16  # DKDM: one teacher forward per training sample
    parts = plan["memory_bytes"]
    assert plan["memory_per_process_bytes"] == sum(v for v in parts.values() if v is not None)
    assert plan["flops"] > 0 and plan["parameters"]["student"] > 0
    text = CliRunner().invoke(app, ARGS).output
    assert f"{plan['teacher_forwards']:,} (samples" in text  # the text plan's total
    assert f"{plan['flops'] / 1e12:,.3f} TFLOP per step" in text


def test_json_without_dry_run_is_a_one_line_error():
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)), ["distill", "--recipe", "quickstart", "--json"]
    )
    assert result.exit_code == 2 and "--json prints the --dry-run plan" in result.output
