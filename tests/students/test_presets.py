"""Preset sizes: every architecture x preset lands in the documented parameter range.

Documented ranges (parameters of a student for a CIFAR-like 3x32x32 unconditional teacher):
tiny < 200k (also at 1x8x8 and 1x16x16, so tests run it on CPU), small 1M-6M ("a few M"),
base 10M-20M (the DKDM paper's 14M CIFAR-10 student scale).
"""

from __future__ import annotations

import importlib

import pytest

from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import count_parameters

CIFAR = TeacherSpec(sample_shape=(3, 32, 32))
RANGES = {"tiny": (10_000, 200_000), "small": (1_000_000, 6_000_000), "base": (10_000_000, 20_000_000)}
ARCHS = ["unet", "dit", "convnext", "uvit"]


@pytest.mark.parametrize("arch", ARCHS)
def test_preset_parameter_counts(arch: str, uvit_registry):
    counts = {}
    for preset, (low, high) in RANGES.items():
        counts[preset] = count_parameters(uvit_registry.create("students", arch, CIFAR, preset=preset))
        assert low <= counts[preset] <= high, (
            f"{arch}/{preset}: {counts[preset]:,} outside [{low:,}, {high:,}]"
        )
    assert counts["tiny"] < counts["small"] < counts["base"]
    for shape in [(1, 8, 8), (1, 16, 16)]:
        tiny = uvit_registry.create("students", arch, TeacherSpec(sample_shape=shape), preset="tiny")
        assert count_parameters(tiny) < 200_000


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_has_the_three_presets(arch: str, uvit_registry):
    factory = uvit_registry.get("students", arch).load()
    presets = importlib.import_module(factory.__module__).PRESETS
    assert {"tiny", "small", "base"} <= set(presets)
    assert uvit_registry.get("students", arch).option_defaults() == {"preset": "small"}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_preset_field_is_typed(arch: str, uvit_registry):
    """A wrong type for any field of any preset is one line naming it (dataclass presets declare
    their types and ranges; the U-ViT plugin's dict presets have them read off their values)."""
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.students.base import preset_types

    factory = uvit_registry.get("students", arch).load()
    presets = importlib.import_module(factory.__module__).PRESETS
    spec = TeacherSpec(sample_shape=(1, 8, 8))
    for name in preset_types(presets):
        with pytest.raises(UserError) as info:
            uvit_registry.create("students", arch, spec, preset="tiny", **{name: "abc"})
        message = str(info.value)
        assert f"student.{name} = 'abc' is not " in message and "\n" not in message, message


@pytest.mark.parametrize("arch", ["dit", "uvit"])
def test_patch_students_keep_a_token_grid_of_at_least_min_grid(arch: str, uvit_registry):
    """A preset's 2x2 patches shrink to 1x1 on 8x8 digits (64 tokens, not 16), not on 16x16 or 32x32;
    a patch size the user chose is kept."""

    def patch(shape, **overrides):
        model = uvit_registry.create(
            "students", arch, TeacherSpec(sample_shape=shape), preset="tiny", **overrides
        )
        return model.config.patch_size

    assert patch((1, 8, 8)) == 1
    assert patch((1, 16, 16)) == 2 and patch((3, 32, 32)) == 2
    assert patch((1, 8, 8), patch_size=2) == 2  # explicit: kept
    assert patch((1, 16, 16), min_grid=16) == 1 and patch((1, 8, 8), min_grid=1) == 2
