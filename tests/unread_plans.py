"""The plan `distill --dry-run` makes with the teacher's weights unread (as shipped: configs only,
fake tensors) against the plan of the same command with every weight read, for tests that build
narrow layouts of real families."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry


def dry_run_json(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)), [*args, "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    plan.pop("estimate")  # wall-time estimates: this CPU's matmul rate, measured each time
    return plan


def plans_unread_and_read(args: list[str], monkeypatch: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the plan as shipped, the plan with the weights loaded and the teacher's copies made whole)."""
    unread = dry_run_json(args)
    with monkeypatch.context() as patch:
        patch.setattr(
            "dkdm_zoo.teachers.unread.weights_unread", lambda enabled=True: contextlib.nullcontext()
        )
        patch.setattr(
            "dkdm_zoo.students.materialise.empty_copies", lambda enabled=True: contextlib.nullcontext()
        )
        read = dry_run_json(args)
    return unread, read
