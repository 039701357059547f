"""Tiny random teachers and students (1x8x8, T = 20) shared by the method, engine and CLI tests."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from dkdm_zoo.registry import build_registry, hookimpl
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher
from dkdm_zoo.testing.tiny_teachers import T, scheduler_config, tiny_unet  # noqa: F401 - T is re-exported


def tiny_teacher(learned: bool = False, num_classes: int | None = None, seed: int = 0) -> DDPMUNetTeacher:
    unet = tiny_unet(1, 2 if learned else 1, num_classes, seed)
    return DDPMUNetTeacher(unet, scheduler_config("learned_range" if learned else "fixed_small"))


class UNetContract(UNet2DModel):
    """A UNet2DModel with the student contract (plain tensor out): used if students.unet is absent."""

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None):  # type: ignore[override]
        return super().forward(sample, timestep, class_labels=class_labels, return_dict=False)[0]

    def to_diffusers_unet(self) -> UNet2DModel:
        plain = UNet2DModel.from_config(self.config)
        plain.load_state_dict(self.state_dict())
        return plain


def tiny_student(spec: TeacherSpec, preset: str = "tiny", **overrides: Any) -> torch.nn.Module:
    """The registry's `unet` student at its tiny preset, or the contract wrapper above."""
    try:
        from dkdm_zoo.students.unet import build
    except ImportError:
        return UNetContract(
            sample_size=spec.resolution,
            in_channels=spec.channels,
            out_channels=spec.out_channels,
            block_out_channels=(16, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=None if spec.num_classes is None else spec.num_classes + 1,
        )
    return build(spec, preset="tiny", **overrides)


def teacher_factory(seed: int = 0, learned: bool = False, num_classes: int | None = None) -> DDPMUNetTeacher:
    return tiny_teacher(learned=learned, num_classes=num_classes, seed=seed)


def tiny_registry():
    """The real registry plus a test plugin with the tiny teacher and student."""
    plugin = types.SimpleNamespace(
        register_teachers=hookimpl(lambda register: register("tiny", teacher_factory)),
        register_students=hookimpl(lambda register: register("tiny-unet", tiny_student)),
    )
    return build_registry(extra=[("tiny-test-plugin", plugin)], entry_points=False)


def save_tiny_teacher(folder: Path) -> Path:
    """A tiny ddpm-unet teacher folder (unet/ + scheduler/), as the `ddpm-unet` teacher loads it."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(**scheduler_config())).save_pretrained(folder)
    return folder
