"""`sdxl`: Stable Diffusion XL (UNet2DConditionModel with ``addition_embed_type = "text_time"``).

Conditions follow ``StableDiffusionXLPipeline.encode_prompt``: the penultimate hidden states of
both text encoders (CLIP ViT-L and OpenCLIP bigG), concatenated along the feature axis, are the
encoder hidden states (what scratch students see too); the pooled projection of the second
encoder and the six ``add_time_ids`` (original size, crop top-left, target size) travel in
``Condition.extras`` under the names the UNet's ``added_cond_kwargs`` use. The null condition of
guidance is all zeros where model_index.json sets ``force_zeros_for_empty_prompt`` (as the pipeline
does without a negative prompt), else the encoded empty prompt. A VAE whose config sets
``force_upcast`` decodes in float32 when the teacher runs in float16.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Condition, PipelineComponents, Teacher
from dkdm_zoo.teachers.dit import vae_downsampling
from dkdm_zoo.teachers.latent_sd import ENCODE_BATCH, LatentSDTeacher, read_prompts
from dkdm_zoo.teachers.loading import (
    HubTeacherOptions,
    find_model_folder,
    load_pretrained,
    load_scheduler_config,
    parse_dtype,
    read_config,
    require_component,
    resolve_source,
    schedule_spec_fields,
)
from dkdm_zoo.teachers.sources import read_json

#: what diffusers' SDXL pipelines name: the base (text-to-image) and the refiner (image-to-image)
BASE_PIPELINE = "StableDiffusionXLPipeline"
REFINER_PIPELINE = "StableDiffusionXLImg2ImgPipeline"


def spec_from_sdxl(
    unet: nn.Module,
    vae: nn.Module,
    encoders: tuple[nn.Module, nn.Module],
    seq_len: int,
    scheduler: dict,
    resolution: int | None = None,
) -> TeacherSpec:
    cfg = unet.config
    channels = cfg.in_channels
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    if resolution is not None:
        size = latent_size(resolution, vae_downsampling(vae), len(cfg.down_block_types))
    widths = [int(e.config.hidden_size) for e in encoders]
    if cfg.cross_attention_dim != sum(widths):
        raise UserError(
            f"sdxl: unet/config.json cross_attention_dim = {cfg.cross_attention_dim} but the two text encoders "
            f"give {widths[0]} + {widths[1]}: use a UNet and text encoders from the same pipeline"
        )
    pooled = int(encoders[1].config.projection_dim)
    expected = 6 * int(cfg.addition_time_embed_dim) + pooled
    if cfg.projection_class_embeddings_input_dim != expected:
        raise UserError(
            f"sdxl: unet/config.json projection_class_embeddings_input_dim = "
            f"{cfg.projection_class_embeddings_input_dim}, but 6 time ids x {cfg.addition_time_embed_dim} + "
            f"text_encoder_2's projection_dim {pooled} = {expected}: this UNet takes other added conditions "
            "(an SDXL refiner's aesthetic score?); the sdxl family reads base text-to-image UNets"
        )
    factor = vae_downsampling(vae)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="latent",
        **schedule_spec_fields(
            scheduler,
            learned=cfg.out_channels == 2 * channels,
            where="sdxl",
            built_as="EulerDiscreteScheduler",
        ),
        conditioning="text",
        text_embed_dim=sum(widths),
        text_seq_len=int(seq_len),
        image_shape=(vae.config.out_channels, size * factor, size * factor),
        family="sdxl",
    )


def latent_size(resolution: int, factor: int, stages: int) -> int:
    """The latent side for a ``resolution``-pixel square: the VAE's factor, then the UNet's downsamplers
    (``stages`` - 1 halvings), must divide it, as StableDiffusionXLPipeline's ``height`` / ``width``."""
    multiple = factor * 2 ** (stages - 1)
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or resolution <= 0
        or resolution % multiple
    ):
        raise UserError(
            f"sdxl: resolution = {resolution!r} is not a positive multiple of {multiple} pixels (the VAE's "
            f"x{factor} and the UNet's {stages - 1} downsamplers): e.g. 512 or 1024"
        )
    return resolution // factor


class SDXLTeacher(LatentSDTeacher):
    """SDXL's UNet on VAE latents, conditioned on two CLIP encoders, a pooled projection and time ids."""

    student_calling = "teacher"  # its UNet takes the pooled projection and time ids as added_cond_kwargs
    honours_force_upcast = True

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        text_encoder_2: nn.Module,
        tokenizer: Any,
        tokenizer_2: Any,
        scheduler_config: dict[str, Any],
        *,
        prompts: str | os.PathLike[str] | Sequence[str] | None = None,
        guidance_scale: float | None = 5.0,
        force_zeros_for_empty_prompt: bool = True,
        original_size: Sequence[int] | None = None,
        crops_coords_top_left: Sequence[int] = (0, 0),
        target_size: Sequence[int] | None = None,
        resolution: int | None = None,
    ):
        spec = spec_from_sdxl(
            unet,
            vae,
            (text_encoder, text_encoder_2),
            tokenizer.model_max_length,
            dict(scheduler_config),
            resolution,
        )
        Teacher.__init__(self, spec, guidance_scale=guidance_scale)
        self.unet, self.vae = unet, vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.prompts = read_prompts(prompts)
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        # the pipeline's defaults: its height and width (the UNet's native size unless resolution is set)
        height, width = spec.image_shape[1:]
        ids = [*_pair(original_size or (height, width), "original_size")]
        ids += [*_pair(crops_coords_top_left, "crops_coords_top_left")]
        ids += [*_pair(target_size or (height, width), "target_size")]
        self.add_time_ids = torch.tensor([ids], dtype=torch.float32)  # (1, 6), as _get_add_time_ids
        self._null = None
        self._cache = OrderedDict()
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder, self.text_encoder_2]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SDXLTeacher:
        super().to(device, dtype)
        self.add_time_ids = self.add_time_ids.to(self.device)
        return self

    @torch.no_grad()
    def encode_parts(self, prompts: list[str]) -> dict[str, Tensor]:
        """Both encoders' penultimate hidden states, concatenated, and text_encoder_2's pooled projection."""
        texts, pooled = [], []
        for start in range(0, len(prompts), ENCODE_BATCH):
            chunk, states, pool = prompts[start : start + ENCODE_BATCH], [], None
            for tokenizer, encoder in (
                (self.tokenizer, self.text_encoder),
                (self.tokenizer_2, self.text_encoder_2),
            ):
                ids = tokenizer(
                    chunk,
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids.to(self.device)
                out = encoder(ids, output_hidden_states=True)
                if pool is None and out[0].ndim == 2:  # CLIPTextModelWithProjection's text_embeds
                    pool = out[0]
                states.append(out.hidden_states[-2])
            texts.append(torch.cat(states, dim=-1))
            pooled.append(pool)
        return {"text": torch.cat(texts), "pooled": torch.cat(pooled)}

    def null_parts(self) -> dict[str, Tensor]:
        parts = self.encode_parts([""])
        if self.force_zeros_for_empty_prompt:  # the pipeline's negative without a negative prompt
            parts = {k: torch.zeros_like(v) for k, v in parts.items()}
        return parts

    def condition_from_parts(self, parts: dict[str, Tensor], prompts: list[str] | None = None) -> Condition:
        n = len(parts["text"])
        extras = {"text_embeds": parts["pooled"], "time_ids": self.add_time_ids.expand(n, -1)}
        return Condition(text_embeds=parts["text"], prompts=prompts, extras=extras)

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        if cond is None or cond.text_embeds is None:
            cond = self.null_condition(x_t.shape[0])
        missing = [k for k in ("text_embeds", "time_ids") if k not in cond.extras]
        if missing:
            raise UserError(
                f"sdxl: a condition without {' and '.join(missing)}: SDXL conditions come from this teacher's "
                "encode_prompts / conditions_from_refs, which add the pooled projection and time ids"
            )
        added = {k: cond.extras[k].to(x_t.device, self.dtype) for k in ("text_embeds", "time_ids")}
        embeds = cond.text_embeds.to(x_t.device, self.dtype)
        return self.unet(x_t, t.to(x_t.device), encoder_hidden_states=embeds, added_cond_kwargs=added).sample

    def pipeline_components(self) -> PipelineComponents:
        return PipelineComponents(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoding="sdxl",
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            null_zeros=self.force_zeros_for_empty_prompt,
            pipeline_class=BASE_PIPELINE,  # load() refuses the refiner
        )


def _pair(value: Sequence[int], name: str) -> tuple[int, int]:
    items = list(value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
        raise UserError(f"sdxl: {name} = {value!r} is not two integers >= 0 (height, width) / (top, left)")
    return items[0], items[1]


@dataclass(frozen=True)
class SDXLOptions(HubTeacherOptions):
    prompts: str | os.PathLike[str] | Sequence[str] | None = None  # a list, or a file with one per line
    guidance_scale: float | None = 5.0  # StableDiffusionXLPipeline's default
    original_size: list[int] | None = None  # (height, width); None: the UNet's native image size
    crops_coords_top_left: list[int] | None = None  # (top, left); None: (0, 0)
    target_size: list[int] | None = None  # (height, width); None: the UNet's native image size
    # the square image side the teacher generates and students learn, in pixels (SDXL-Turbo: 512);
    # None: the UNet's native size (1024 for SDXL base). original/target_size default to it.
    resolution: int | None = None


@takes_options(SDXLOptions)
def load(options: SDXLOptions) -> SDXLTeacher:
    """A teacher from a StableDiffusionXLPipeline folder, hub id or cached snapshot (unet/, vae/,
    text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    o = options
    source = resolve_source(o.path, o.local_files_only)
    index_path = source.fetch("model_index.json")
    index = read_json(index_path) if index_path is not None else {}
    if index.get("_class_name") == REFINER_PIPELINE or index.get("requires_aesthetics_score"):
        raise UserError(
            f"{index_path}: _class_name = {index.get('_class_name')!r} is an SDXL refiner (image-to-image, "
            "conditioned on an aesthetic score and one text encoder), not a text-to-image teacher: distil the "
            "base model (stabilityai/stable-diffusion-xl-base-1.0) or an SDXL-Turbo-style text-to-image folder"
        )
    folder = find_model_folder(source, ("unet",))
    if folder is None:
        raise UserError(f"{source} is a single model folder: sdxl needs a {BASE_PIPELINE} folder")
    if read_config(source, folder).get("addition_embed_type") != "text_time":
        raise UserError(
            f"{source.where(folder)}/config.json: addition_embed_type is not 'text_time': not an SDXL UNet "
            "(a Stable Diffusion 1.x / 2.x pipeline loads as latent-sd@PATH)"
        )
    for part in ("vae", "text_encoder", "text_encoder_2"):
        require_component(source, part, "sdxl")
    force_zeros = index.get("force_zeros_for_empty_prompt", True)
    if not isinstance(force_zeros, bool):
        raise UserError(f"{index_path}: force_zeros_for_empty_prompt = {force_zeros!r} is not true or false")
    scheduler_config = load_scheduler_config(source, folder)
    weights = {"allow_pickle": o.allow_pickle, "dtype": o.dtype}
    teacher = SDXLTeacher(
        load_pretrained(UNet2DConditionModel, source, folder, **weights),
        load_pretrained(AutoencoderKL, source, "vae", **weights),
        load_pretrained(CLIPTextModel, source, "text_encoder", dtype_kwarg="dtype", **weights),
        load_pretrained(
            CLIPTextModelWithProjection, source, "text_encoder_2", dtype_kwarg="dtype", **weights
        ),
        load_pretrained(CLIPTokenizer, source, "tokenizer", weights=False),
        load_pretrained(CLIPTokenizer, source, "tokenizer_2", weights=False),
        scheduler_config,
        prompts=o.prompts,
        guidance_scale=o.guidance_scale,
        force_zeros_for_empty_prompt=force_zeros,
        original_size=o.original_size,
        crops_coords_top_left=o.crops_coords_top_left or (0, 0),
        target_size=o.target_size,
        resolution=o.resolution,
    )
    return teacher.to("cpu", parse_dtype(o.dtype))
