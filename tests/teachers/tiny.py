"""Tiny random diffusers models saved to tmp folders in the layouts teachers load."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel


def tiny_unet(out_channels: int = 3, num_class_embeds: int | None = None, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return (
        UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=out_channels,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=num_class_embeds,
        )
        .eval()
        .requires_grad_(False)
    )


def tiny_vae(latent_channels: int = 4, seed: int = 1) -> AutoencoderKL:
    torch.manual_seed(seed)
    return (
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
            sample_size=16,
            scaling_factor=0.5,
        )
        .eval()
        .requires_grad_(False)
    )


def ddpm_scheduler(**kwargs) -> DDPMScheduler:
    config = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": False, **kwargs}
    return DDPMScheduler(**config)


def save_pipeline(folder: Path, unet: UNet2DModel, scheduler: DDPMScheduler) -> Path:
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def save_model_folder(folder: Path, unet: UNet2DModel, scheduler: DDPMScheduler) -> Path:
    unet.save_pretrained(folder)
    scheduler.save_pretrained(folder)  # scheduler_config.json beside config.json
    return folder


def tiny_dit(in_channels: int = 4, sample_size: int = 8, num_classes: int = 5, seed: int = 2):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    return (
        DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=in_channels,
            out_channels=2 * in_channels,
            num_layers=1,
            sample_size=sample_size,
            patch_size=2,
            num_embeds_ada_norm=num_classes,
            norm_num_groups=8,
        )
        .eval()
        .requires_grad_(False)
    )
