"""The sharding choice (train.sharding against a user's accelerate config), FSDP units and
activation checkpointing, without processes (the torchrun runs are in test_fsdp.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dkdm_zoo.config.recipes import TrainConfig
from dkdm_zoo.engine.sharding import block_classes, choose_sharding, enable_block_checkpointing, meta_skeleton
from dkdm_zoo.errors import UserError
from tests.methods.tiny import tiny_student, tiny_teacher


def test_an_accelerate_config_asking_fsdp_is_followed_unless_the_recipe_says_otherwise(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert choose_sharding(TrainConfig(), explicit=False) == "ddp"
    assert choose_sharding(TrainConfig(sharding="fsdp"), explicit=True) == "fsdp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert choose_sharding(TrainConfig(), explicit=False) == "fsdp"
    with pytest.raises(UserError, match="train.sharding='ddp' but your accelerate config asks for FSDP"):
        choose_sharding(TrainConfig(sharding="ddp"), explicit=True)
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(UserError, match="FSDP version 1 .*set fsdp_version: 2"):
        choose_sharding(TrainConfig(), explicit=False)


def test_a_networks_blocks_are_its_outermost_module_lists_entries():
    unet = tiny_teacher().unet
    assert block_classes(unet) == ["DownBlock2D", "UpBlock2D"]
    assert block_classes(nn.Sequential(nn.Linear(2, 2))) == []


def test_activation_checkpointing_is_diffusers_own_or_refused():
    student = tiny_student(tiny_teacher().spec)
    assert enable_block_checkpointing(student, "student") and student.is_gradient_checkpointing
    with pytest.raises(
        UserError, match="network 'fake' \\(Linear\\) has no diffusers gradient checkpointing"
    ):
        enable_block_checkpointing(nn.Linear(2, 2), "fake")


def test_the_meta_skeleton_holds_no_weights_and_takes_them_whole():
    student = tiny_student(tiny_teacher().spec)
    skeleton = meta_skeleton(student)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert all(p.device.type == "cpu" for p in student.parameters())  # the original untouched
    skeleton.load_state_dict(student.state_dict(), assign=True)
    for a, b in zip(student.parameters(), skeleton.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cpu_offload_is_refused_without_fsdp_and_on_cpu(tmp_path):
    from dkdm_zoo.engine.sharding import make_accelerator

    with pytest.raises(UserError, match="set train.sharding='fsdp' with it"):
        make_accelerator(TrainConfig(cpu_offload=True), str(tmp_path), "ddp", cpu=True)
    with pytest.raises(UserError, match="on CPU they are there already"):
        make_accelerator(TrainConfig(cpu_offload=True, sharding="fsdp"), str(tmp_path), "fsdp", cpu=True)


def test_checkpointing_reaches_the_teacher_a_lora_student_shares(tmp_path):
    """SiD back-propagates through the frozen teacher; with LoRA students its tensors are shared with
    the trained networks, and its own blocks must still be recomputed, as the plan counts them (an
    SDXL LoRA run at 1024 px ran out of 24 GiB without it)."""
    pytest.importorskip("peft")
    from dkdm_zoo.config.build import build
    from dkdm_zoo.config.recipes import Component, Recipe
    from dkdm_zoo.engine import train
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.runs import Run

    cfg = TrainConfig(
        steps=1, batch_size=2, checkpoint_every=0, preview_every=0, final_eval_samples=0,
        activation_checkpointing=True,
    )  # fmt: skip
    recipe = Recipe(
        "lora-ckpt", Component("digits-ddpm"), Component("teacher", {"lora_rank": 2}), Component("sid"), cfg,
        train_set=frozenset({"activation_checkpointing"}),
    )  # fmt: skip
    built = build(recipe, build_registry())
    denoiser = built.teacher.denoiser()
    shared = {id(p) for p in denoiser.parameters()}
    assert any(id(p) in shared for p in built.student.parameters())  # the LoRA base is the teacher's
    assert not denoiser.is_gradient_checkpointing
    train(recipe, built.teacher, built.student, built.method, Run(tmp_path), quiet=True)
    assert denoiser.is_gradient_checkpointing
