"""Every teacher family x built-in student x method: one real training step, or the expected refusal."""

from __future__ import annotations

import json

import pytest
import torch

from dkdm_zoo.registry import build_registry
from dkdm_zoo.testing.matrix import compatibility_matrix, matrix_pairs
from dkdm_zoo.testing.tiny_teachers import TINY_TEACHERS

FLOW_TEXT = {"sd3", "flux", "sana"}  # flow-matching text-to-image families
LATENT = {"dit", "latent-sd", "sdxl", "pixart"} | FLOW_TEXT
TEXT = {"latent-sd", "sdxl", "pixart"} | FLOW_TEXT


def expected_refusal(teacher: str, student: str, method: str) -> str | None:
    """The reason a pair must be refused, or None if it must train (stated here, not read off the code)."""
    if teacher == "spec" and (method != "data" or student == "teacher"):  # nothing to copy either
        return "has no network"
    if teacher in TEXT and student == "convnext":
        return "no text conditioning"
    if teacher in LATENT and method == "data":
        return "pixel-space models only"
    return None


@pytest.fixture(scope="module")
def results():
    torch.set_num_threads(1)
    registry = build_registry(entry_points=False)
    return {
        (r.teacher, r.student, r.method): r for r in compatibility_matrix(registry, matrix_pairs(registry))
    }


def test_matrix_covers_every_registered_pair(results):
    registry = build_registry(entry_points=False)
    students = {e.name for e in registry.list("students")}
    methods = {e.name for e in registry.list("methods")}
    assert set(results) == {(t, s, m) for t in TINY_TEACHERS for s in students for m in methods}


def test_each_pair_trains_or_is_refused_with_its_reason(results):
    for (teacher, student, method), r in results.items():
        reason = expected_refusal(teacher, student, method)
        if reason is None:
            assert r.status == "ok", (teacher, student, method, r.reason)
        else:
            assert r.status == "unsupported" and reason in r.reason, (
                teacher,
                student,
                method,
                r.status,
                r.reason,
            )
            assert "\n" not in r.reason


def test_matrix_cli_json(tmp_path):
    from typer.testing import CliRunner

    from dkdm_zoo.cli.app import create_app

    app = create_app(build_registry(entry_points=False))
    out = CliRunner().invoke(app, ["matrix", "--teachers", "spec,ddpm-unet", "--students", "unet", "--json"])
    assert out.exit_code == 0, out.output
    rows = {(r["teacher"], r["method"]): r["status"] for r in json.loads(out.stdout)}
    assert rows[("spec", "data")] == "ok" and rows[("spec", "dkdm")] == "unsupported"
    assert rows[("ddpm-unet", "dkdm")] == "ok"
    bad = CliRunner().invoke(app, ["matrix", "--teachers", "nope"])
    assert bad.exit_code == 2
