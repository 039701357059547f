"""Tiny in-memory teachers of the flow text-to-image families (sd3, flux, sana) for the matrix: the
narrow SD3.5-medium / FLUX.1-dev / SANA pipelines (``flow_hub_fixtures``), not saved, short texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dkdm_zoo.teachers.base import Teacher

PROMPTS = ["a cat", "a dog", "a red fox"]
TEXT_TOKENS = 8  # T5 / Gemma tokens per prompt


def _config(pipe: Any) -> dict[str, Any]:
    return {"_class_name": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)}


def sd3_teacher(workdir: Path | None = None, registry: Any = None) -> Teacher:
    from dkdm_zoo.teachers.sd3 import SD3Teacher
    from dkdm_zoo.testing.flow_hub_fixtures import sd35_medium_pipeline

    pipe = sd35_medium_pipeline("narrow")
    return SD3Teacher(
        pipe, _config(pipe), prompts=PROMPTS, guidance_scale=3.0, max_sequence_length=TEXT_TOKENS
    )


def flux_teacher(workdir: Path | None = None, registry: Any = None) -> Teacher:
    """FLUX.1-dev's layout: embedded guidance, dynamic shift at 8x8 latents (64 px)."""
    from dkdm_zoo.teachers.flux import FluxTeacher
    from dkdm_zoo.testing.flow_hub_fixtures import flux_pipeline

    pipe = flux_pipeline("narrow", dev=True)
    return FluxTeacher(pipe, _config(pipe), prompts=PROMPTS, max_sequence_length=TEXT_TOKENS, resolution=64)


def sana_teacher(workdir: Path | None = None, registry: Any = None) -> Teacher:
    from dkdm_zoo.teachers.sana import SanaTeacher
    from dkdm_zoo.testing.flow_hub_fixtures import sana_pipeline

    pipe = sana_pipeline("narrow")
    return SanaTeacher(
        pipe, _config(pipe), prompts=PROMPTS, guidance_scale=3.0, max_sequence_length=TEXT_TOKENS
    )
