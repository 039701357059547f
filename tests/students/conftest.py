"""Tiny teacher specs, one per family a student must handle (or refuse), and the U-ViT plugin registry."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from dkdm_zoo.spec import TeacherSpec

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "dkdm-zoo-uvit"

TINY_SPECS: dict[str, TeacherSpec] = {
    "pixel-uncond": TeacherSpec(sample_shape=(1, 8, 8), family="digits"),
    "pixel-class-learned": TeacherSpec(
        sample_shape=(1, 16, 16), conditioning="class", num_classes=10, variance_type="learned_range"
    ),
    "latent-class": TeacherSpec(sample_shape=(4, 8, 8), space="latent", conditioning="class", num_classes=5),
    "text-latent": TeacherSpec(
        sample_shape=(4, 8, 8), space="latent", conditioning="text", text_embed_dim=32, text_seq_len=8
    ),
}

# Which (student, family) pairs must be refused with IncompatibleError; every other pair must work.
# A student registered without an entry here fails the suite until its support is stated.
UNSUPPORTED: dict[str, set[str]] = {
    "unet": set(),
    "dit": set(),
    "convnext": {"text-latent"},
    "uvit": set(),
    # made from the teacher itself (tests/students/test_teacher_student.py): a spec alone is refused
    "teacher": {"pixel-uncond", "pixel-class-learned", "latent-class", "text-latent"},
}


@pytest.fixture(scope="session")
def uvit_registry():
    """Built-ins plus the U-ViT plugin from its source folder, registered as an extra plugin (no install)."""
    from dkdm_zoo.registry import build_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGIN_DIR))
        plugin = importlib.import_module("dkdm_zoo_uvit.plugin")
        registry = build_registry(entry_points=False, extra=[("uvit", plugin)], strict=True)
        registry.get("students", "uvit").load()  # import the model module while the path is set
        yield registry
