"""Benchmark settings: random-weight teachers of a known size, students, and a DKDM with a pre-filled pool.

Nothing is downloaded: the CIFAR-sized teacher is a UNet2DModel with google/ddpm-cifar10-32's
configuration (35.7M parameters) and random weights; speed does not depend on the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher

# google/ddpm-cifar10-32: unet/config.json and scheduler_config.json (fixed_large, clip, linear betas)
CIFAR_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "freq_shift": 1,
    "flip_sin_to_cos": False,
    "downsample_padding": 0,
    "resnet_time_scale_shift": "default",
}
# A digits-sized (1x8x8) teacher, ~1M parameters (a stand-in; the shipped digits-ddpm may differ).
DIGITS_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 32,
    "norm_num_groups": 16,
}
SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
}
SETTINGS = {
    "digits": {"unet": DIGITS_UNET, "variance_type": "fixed_small", "shape": (1, 8, 8)},
    "cifar": {"unet": CIFAR_UNET, "variance_type": "fixed_large", "shape": (3, 32, 32)},
}


def scheduler_config(setting: str) -> dict[str, Any]:
    return {**SCHEDULER, "variance_type": SETTINGS[setting]["variance_type"]}


def teacher_unet(setting: str, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**SETTINGS[setting]["unet"]).eval().requires_grad_(False)


def teacher(setting: str, seed: int = 0) -> DDPMUNetTeacher:
    return DDPMUNetTeacher(teacher_unet(setting, seed), scheduler_config(setting))


def save_teacher(setting: str, folder: Path, seed: int = 0) -> Path:
    """A diffusers model folder (config + safetensors + scheduler) for ``--teacher ddpm-unet@folder``."""
    import json

    unet = teacher_unet(setting, seed)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config(setting)))
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]})
    )
    return folder


def student(spec: Any, preset: str, seed: int = 0) -> torch.nn.Module:
    from dkdm_zoo.students.unet import build

    torch.manual_seed(seed)
    return build(spec, preset=preset)


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_pool(spec: Any, slots: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool of the right size with random contents: noise at uniform timesteps (speed only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((slots, *spec.sample_shape), generator=g)
    k = torch.randint(0, spec.num_train_timesteps, (slots,), generator=g)
    return x, k


class PrefilledDKDM(DKDM):
    """DKDM whose pool initialisation copies a prepared pool (so timing excludes the offline init).

    Everything after initialisation (draw, resets, teacher forward and step, loss) is DKDM's own code.
    """

    def __init__(self, *args: Any, pool: tuple[torch.Tensor, torch.Tensor], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._prefill = pool

    def init_pool(self, batch_size: int) -> None:
        x, k = self._prefill
        assert len(x) == self.pool_size(batch_size), "prepared pool of the wrong size"
        self.pool_x, self.pool_k = x.clone().to(self.device), k.clone().to(self.device)
        self.pool_cond = {}
