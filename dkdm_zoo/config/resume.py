"""What a resumed run may change: settings a checkpoint does not fix take effect from the resumed
step (and are recorded in recipe.toml); anything else is refused in one line listing each difference."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from dkdm_zoo.config.recipes import Component, Recipe
from dkdm_zoo.errors import UserError

#: train settings a resumed run may change: they take effect from the resumed step and are recorded
#: in recipe.toml; every other setting (the teacher, student and method with their options, batch
#: size, gradient accumulation, seed, optimiser betas and weight decay, EMA decay, the teacher's
#: dtype) is fixed by what the checkpoint holds
RESUMABLE_TRAIN = frozenset(
    {
        "steps",
        "lr",
        "warmup_steps",
        "lr_schedule",
        "grad_clip",
        "mixed_precision",
        "compile",
        "channels_last",
        "checkpoint_every",
        "checkpoints_keep",
        "preview_every",
        "preview_samples",
        "preview_steps",
        "log_every",
        "tracker",
        "final_eval_samples",
        "setup_checkpoint_minutes",
        "reduce_dtype",
        "activation_checkpointing",
        "cpu_offload",
    }
)


def resume_changes(
    stored: Recipe, requested: Recipe, where: str, *, allow: bool = False
) -> tuple[list[str], list[str]]:
    """What ``requested`` changes in the ``stored`` recipe of a run being resumed, as
    ``train.lr 0.0001 -> 5e-05`` lines: (changes a resume may make, changes that alter what the
    checkpoints fix). The latter are one ``UserError`` listing every such difference, unless
    ``allow`` (``--allow-changes``)."""
    refused, changed = [], []
    for section in ("teacher", "student", "method"):
        before, after = _plain(getattr(stored, section)), _plain(getattr(requested, section))
        for key in sorted(set(before) | set(after), key=lambda k: (k != "name", k)):
            if before.get(key) != after.get(key):
                refused.append(f"{section}.{key} {_text(before.get(key))} -> {_text(after.get(key))}")
    old, new = dataclasses.asdict(stored.train), dataclasses.asdict(requested.train)
    for key in old:
        if old[key] != new[key]:
            line = f"train.{key} {_text(old[key])} -> {_text(new[key])}"
            (changed if key in RESUMABLE_TRAIN else refused).append(line)
    if refused and not allow:
        raise UserError(
            f"--resume: {where} cannot change {', '.join(refused)} (its checkpoints fix them); "
            "drop these changes, pass --allow-changes to train on with them anyway (run.json records "
            "them), or start a new run in another --out"
        )
    return changed, refused


def _plain(component: Component) -> dict[str, Any]:
    """name and options as JSON would hold them (tuples as lists; unset options dropped)."""
    options = {k: v for k, v in component.options.items() if v is not None}
    return json.loads(json.dumps({"name": component.name, **options}, default=str))


def _text(value: Any) -> str:
    return "(unset)" if value is None else repr(value)
