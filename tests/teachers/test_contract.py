"""``check_teacher``: every built-in teacher family passes it, and broken teachers are caught by name."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import Tensor, nn

from dkdm_zoo.registry import build_registry
from dkdm_zoo.teachers.base import Condition, Teacher
from dkdm_zoo.testing import tiny_teachers as tiny
from dkdm_zoo.toolkit import TeacherSpec, check_teacher


@pytest.mark.parametrize("family", ["ddpm-unet", "dit", "latent-sd", "run"])
def test_tiny_teachers_of_every_family_pass(family: str, tmp_path):
    builder, requires = tiny.TINY_TEACHERS[family]
    if any(importlib.util.find_spec(m) is None for m in requires):
        pytest.skip(f"needs {requires}")
    check_teacher(builder(tmp_path, build_registry(entry_points=False)))


def test_a_shipped_reference_teacher_passes():
    check_teacher(build_registry(entry_points=False).create("teachers", "digits-dit"))


class Toy(Teacher):
    """Class-conditional toy: a 1x1 conv; each subclass below breaks one point of the contract."""

    def __init__(self, out_channels: int = 1, freeze: bool = True):
        super().__init__(TeacherSpec(sample_shape=(1, 4, 4), conditioning="class", num_classes=3))
        self.net = nn.Conv2d(1, out_channels, 1)
        if freeze:
            self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.net]

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        return self.net(x_t)


class NullIsZero(Toy):
    def null_condition(self, n: int) -> Condition:
        return Condition(labels=torch.zeros(n, dtype=torch.long))


def test_toy_teacher_passes_and_each_broken_point_is_named():
    check_teacher(Toy())
    with pytest.raises(AssertionError, match="not frozen"):
        check_teacher(Toy(freeze=False))
    with pytest.raises(AssertionError, match=r"model_output returned shape \(2, 2, 4, 4\)"):
        check_teacher(Toy(out_channels=2))
    with pytest.raises(AssertionError, match="null_condition must use label index"):
        check_teacher(NullIsZero())
