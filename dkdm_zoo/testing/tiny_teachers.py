"""Tiny random teachers of every built-in family, built in memory with no download.

They exercise each family's code path (pixel / latent, unconditional / class / text, fixed /
learned variance) in seconds on a CPU: the compatibility matrix and the tests use them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DModel

from dkdm_zoo.teachers.base import Teacher

T = 20  # a short schedule keeps pool initialisation and sampling cheap
NUM_CLASSES = 4
TEXT_SEQ = 8


def scheduler_config(
    variance_type: str = "fixed_small", clip_sample: bool = True, **extra: Any
) -> dict[str, Any]:
    return {
        "num_train_timesteps": T,
        "beta_schedule": "linear",
        "beta_start": 1e-3,
        "beta_end": 0.2,
        "variance_type": variance_type,
        "clip_sample": clip_sample,
        **extra,
    }


def tiny_unet(
    channels: int = 1, out_channels: int | None = None, num_classes: int | None = None, seed: int = 0
) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(16, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=None if num_classes is None else num_classes + 1,  # last = null label
    )


def tiny_vae(image_channels: int = 3, latent_channels: int = 4, seed: int = 1) -> AutoencoderKL:
    """A VAE with one 2x downsampling: 16x16 images <-> 8x8 latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.5,
    )


def ddpm_unet_teacher(seed: int = 0) -> Teacher:
    """Pixel space, unconditional, eps prediction, fixed variance, clipping sampler."""
    from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher

    return DDPMUNetTeacher(tiny_unet(1, seed=seed), scheduler_config())


def flow_unet_teacher(seed: int = 0) -> Teacher:
    """Pixel space, unconditional, a rectified-flow path (velocity prediction, FlowMatchEuler, shift 3)."""
    from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": T, "shift": 3.0}
    return DDPMUNetTeacher(tiny_unet(1, seed=seed), config)


def dit_teacher(seed: int = 0) -> Teacher:
    """Latent space with a VAE, class-conditional, learned variance (the DiT-XL/2 recipe, tiny)."""
    from diffusers import DiTTransformer2DModel

    from dkdm_zoo.teachers.dit import DiTTeacher

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=NUM_CLASSES,
        norm_num_groups=8,
    )
    return DiTTeacher(
        transformer, scheduler_config("learned_range", clip_sample=False), tiny_vae(), guidance_scale=2.0
    )


def latent_sd_teacher(seed: int = 0) -> Teacher:
    """Latent space, text-conditional (CLIP), classifier-free guidance with the empty prompt."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dkdm_zoo.teachers.latent_sd import LatentSDTeacher

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(
        vocab={tok: i for i, tok in enumerate(tokens)}, merges=[], model_max_length=TEXT_SEQ
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=TEXT_SEQ,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    config = scheduler_config(
        clip_sample=False, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    prompts = ["a cat", "a dog", "a red bird", "two fish"]
    return LatentSDTeacher(
        unet, tiny_vae(), text_encoder, tokenizer, config, prompts=prompts, guidance_scale=3.0
    )


def run_teacher(workdir: Path, registry: Any, seed: int = 0) -> Teacher:
    """A finished run (a tiny `unet` student of the tiny ddpm-unet teacher) used as a teacher."""
    from dkdm_zoo.registry.classes import class_reference
    from dkdm_zoo.runs import Manifest, Run
    from dkdm_zoo.runs.student import save_student
    from dkdm_zoo.teachers.run import from_run

    origin = ddpm_unet_teacher(seed)
    torch.manual_seed(seed + 1000)  # not the seed a fresh student would get: teacher != student
    student = registry.create("students", "unet", origin.spec, preset="tiny")
    run = Run(Path(workdir) / "tiny-run")
    run.write_manifest(
        Manifest(
            teacher="ddpm-unet",
            teacher_options={},
            teacher_spec=origin.spec,
            student="unet",
            student_class=class_reference(student),
            method="dkdm",
            student_preset="tiny",
        )
    )
    save_student(run, student)
    return from_run(run, registry)


def spec_teacher(seed: int = 0) -> Teacher:
    from dkdm_zoo.teachers.spec_only import load

    return load(sample_shape=(1, 8, 8), num_train_timesteps=T, beta_start=1e-3, beta_end=0.2)


def hub_copy_teacher(repo_id: str, family: str, workdir: Path, registry: Any) -> Teacher:
    """The narrow random-weight copy of a real hub repository (built once per workdir), loaded by its family."""
    from dkdm_zoo.testing.sdxl_fixtures import build_modern_repo

    folder = Path(workdir) / repo_id.replace("/", "--")
    if not (folder / "model_index.json").is_file():
        build_modern_repo(repo_id, folder)
    prompts = ["a cat sitting on a chair", "a red fox in the snow"]
    return registry.create("teachers", family, path=str(folder), prompts=prompts, guidance_scale=3.0)


def _flow(name: str) -> Teacher:
    from dkdm_zoo.testing import tiny_flow_teachers

    return getattr(tiny_flow_teachers, name)()


#: family name -> (builder(workdir, registry), optional modules it needs).
TINY_TEACHERS: dict[str, tuple[Callable[[Path, Any], Teacher], tuple[str, ...]]] = {
    "ddpm-unet": (lambda workdir, registry: ddpm_unet_teacher(), ()),
    "flow-unet": (lambda workdir, registry: flow_unet_teacher(), ()),
    "dit": (lambda workdir, registry: dit_teacher(), ()),
    "latent-sd": (lambda workdir, registry: latent_sd_teacher(), ("transformers",)),
    "sdxl": (
        lambda workdir, registry: hub_copy_teacher(
            "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", workdir, registry
        ),
        ("transformers",),
    ),
    "pixart": (
        lambda workdir, registry: hub_copy_teacher(
            "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "pixart", workdir, registry
        ),
        ("transformers",),
    ),
    "run": (lambda workdir, registry: run_teacher(workdir, registry), ()),
    "spec": (lambda workdir, registry: spec_teacher(), ()),
    # narrow SD3.5-medium / FLUX.1-dev / SANA pipelines (dkdm_zoo.testing.tiny_flow_teachers)
    "sd3": (lambda workdir, registry: _flow("sd3_teacher"), ("transformers",)),
    "flux": (lambda workdir, registry: _flow("flux_teacher"), ("transformers",)),
    "sana": (lambda workdir, registry: _flow("sana_teacher"), ("transformers",)),
}
