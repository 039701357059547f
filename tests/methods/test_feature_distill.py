"""BK-SDM feature distillation as a DKDM loss term, for students made from the teacher."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.students.pruning import feature_pairs, prune
from dkdm_zoo.teachers.as_student import build
from dkdm_zoo.testing.hub_configs import sd_unet
from tests.methods.tiny import tiny_student, tiny_teacher

torch.set_num_threads(1)


def dkdm(teacher, student, **options) -> DKDM:
    method = DKDM(teacher, student, rho=0.1, pool_init="ddim", pool_init_steps=1, **options)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    return method


def test_a_copy_starts_with_zero_feature_loss_and_the_term_trains_the_student():
    teacher = tiny_teacher()
    student = build(teacher.spec, teacher=teacher)
    method = dkdm(teacher, student, feature_weight=2.0)
    loss, logs = method.loss(student, 4, step=0)
    assert float(logs["feature_mse"]) == 0.0 and float(logs["mse"]) == 0.0  # the student IS the teacher
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss, logs = method.loss(student, 4, step=1)
    assert float(logs["feature_mse"]) > 0
    torch.testing.assert_close(loss, logs["mse"] + 2.0 * logs["feature_mse"])
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.unet.parameters())


def test_bk_pairs_are_the_bk_sdm_mapping_layers():
    with init_empty_weights():
        teacher = UNet2DConditionModel.from_config(sd_unet("full"))
        config, _, removed = prune(teacher, "bk-tiny")
        student = UNet2DConditionModel.from_config(config)
    pairs = feature_pairs(student, {"preset": "bk-tiny", **removed})
    assert [t for t, _ in pairs] == [
        "down_blocks.0", "down_blocks.1", "down_blocks.2.attentions.1.proj_out", "up_blocks.1", "up_blocks.2", "up_blocks.3"
    ]  # fmt: skip
    assert [s for _, s in pairs] == [
        "down_blocks.0", "down_blocks.1", "down_blocks.2.attentions.0.proj_out", "up_blocks.0", "up_blocks.1", "up_blocks.2"
    ]  # fmt: skip


def test_feature_distillation_needs_a_teacher_made_student():
    teacher = tiny_teacher()
    with pytest.raises(UserError, match="use --student teacher") as info:
        DKDM(teacher, tiny_student(teacher.spec), feature_weight=1.0)
    assert "\n" not in str(info.value)
