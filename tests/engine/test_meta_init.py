"""Empty copies (``students.materialise``): what a process other than the main one builds from the
teacher under FSDP over several processes. The same modules (names, shapes, dtypes, what trains, the
record of their making) with no parameter values; the whole copies elsewhere are unchanged.
The torchrun runs in test_fsdp.py check the rest: the shards received from process 0 give the same
losses and weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import UNet2DConditionModel

from dkdm_zoo.config.recipes import TrainConfig
from dkdm_zoo.engine.sharding import builds_empty_copies, place
from dkdm_zoo.methods.score_distill import SiD
from dkdm_zoo.students.materialise import copy_network, empty_copies, held_parameters
from dkdm_zoo.teachers.as_student import build
from dkdm_zoo.testing import tiny_teachers as tiny
from dkdm_zoo.testing.hub_configs import sd_unet
from tests.methods.tiny import tiny_student

torch.set_num_threads(1)


def layout(module: torch.nn.Module) -> list[tuple]:
    return [(n, p.shape, p.dtype, p.requires_grad) for n, p in module.named_parameters()]


def assert_empty_twin(empty: torch.nn.Module, whole: torch.nn.Module) -> None:
    assert layout(empty) == layout(whole)
    assert all(p.is_meta for p in empty.parameters()) and held_parameters(empty) == 0
    buffers = dict(whole.named_buffers())
    for name, buffer in empty.named_buffers():  # kept: some are in no state dict, nothing sends them
        assert not buffer.is_meta and torch.equal(buffer, buffers[name]), name


def test_a_teacher_copy_student_is_empty_inside_empty_copies_and_whole_outside():
    teacher = tiny.ddpm_unet_teacher()
    whole = build(teacher.spec, teacher=teacher)
    with empty_copies():
        empty = build(teacher.spec, teacher=teacher)
    assert_empty_twin(empty, whole)
    assert empty.config.source == whole.config.source
    assert held_parameters(whole) == held_parameters(teacher.denoiser()) > 0
    assert not any(p.is_meta for p in teacher.denoiser().parameters())  # the teacher is untouched
    assert isinstance(copy_network(teacher.denoiser()), type(teacher.denoiser()))  # outside: whole


def test_a_pruned_student_is_empty_and_records_the_same_copy():
    teacher = tiny.latent_sd_teacher()
    torch.manual_seed(0)
    config = dict(sd_unet("narrow"), layers_per_block=2, cross_attention_dim=16)
    teacher.unet = UNet2DConditionModel.from_config(config).eval().requires_grad_(False)
    whole = build(teacher.spec, "bk-small", teacher=teacher)
    with empty_copies():
        empty = build(teacher.spec, "bk-small", teacher=teacher)
    assert_empty_twin(empty, whole)
    assert empty.config.source == whole.config.source  # copied / total / left at init: the same


def test_the_fake_score_is_empty_and_place_moves_only_its_buffers():
    teacher = tiny.ddpm_unet_teacher()
    spec = teacher.spec
    whole = SiD(teacher, tiny_student(spec))
    with empty_copies():
        empty = SiD(teacher, tiny_student(spec))
    assert_empty_twin(empty.fake_net, whole.fake_net)
    assert held_parameters(empty.student) == held_parameters(whole.student)  # its own network: whole
    place(empty.fake_net, torch.device("cpu"), channels_last=False)  # no copy out of meta
    assert held_parameters(empty.fake_net) == 0


@pytest.mark.parametrize(
    ("sharding", "world", "rank", "empty"),
    [
        ("fsdp", "2", "1", True),
        ("fsdp", "2", "0", False),
        ("ddp", "2", "1", False),
        ("fsdp", "1", "0", False),
    ],
)
def test_only_non_main_processes_of_a_sharded_run_build_empty_copies(
    monkeypatch, sharding, world, rank, empty
):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.setenv("WORLD_SIZE", world)
    cfg = dataclasses.replace(TrainConfig(), sharding=sharding)
    assert builds_empty_copies(cfg, explicit=True, main=rank == "0") is empty
