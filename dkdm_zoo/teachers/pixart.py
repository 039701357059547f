"""`pixart`: PixArt-α and PixArt-Σ (PixArtTransformer2DModel, ``ada_norm_single``, T5 text).

Conditions follow the pipelines' ``encode_prompt`` (without ``clean_caption``, which needs bs4 and
ftfy: prompts are lower-cased and stripped, as the pipelines do then): T5 encoder states at the
pipeline's max length (``PixArtAlphaPipeline`` 120 tokens, ``PixArtSigmaPipeline`` 300) with the
tokenizer's attention mask, which travels in ``Condition.extras["encoder_attention_mask"]``; the null
condition is the encoded empty prompt, with its mask. A transformer that uses additional conditions
(α at 1024 px) gets the resolution and aspect ratio of the image it makes, as PixArtAlphaPipeline
passes them. The output has 8 channels (eps and the learned variance interpolation).
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

#: each pipeline's default ``max_sequence_length``
MAX_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
MASK = "encoder_attention_mask"


def spec_from_pixart(
    transformer: nn.Module, vae: nn.Module, text_encoder: nn.Module, seq_len: int, scheduler: dict
) -> TeacherSpec:
    cfg = transformer.config
    channels = cfg.in_channels
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    width = int(text_encoder.config.d_model)
    if cfg.caption_channels != width:
        raise UserError(
            f"pixart: transformer/config.json caption_channels = {cfg.caption_channels} but the text encoder "
            f"gives {width}: use a transformer and text encoder from the same pipeline"
        )
    if cfg.out_channels not in (channels, 2 * channels):
        raise UserError(
            f"pixart: transformer/config.json out_channels = {cfg.out_channels} with in_channels = {channels}: "
            "expected the same (eps) or twice as many (eps and learned sigma)"
        )
    factor = vae_downsampling(vae)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="latent",
        **schedule_spec_fields(
            scheduler,
            learned=cfg.out_channels == 2 * channels,
            where="pixart",
            built_as="DPMSolverMultistepScheduler",
        ),
        conditioning="text",
        text_embed_dim=width,
        text_seq_len=int(seq_len),
        image_shape=(vae.config.out_channels, size * factor, size * factor),
        family="pixart",
    )


class PixArtTeacher(LatentSDTeacher):
    """A PixArt transformer on VAE latents, conditioned on T5 states and their attention mask."""

    # its transformer takes the timestep by keyword and micro-conditions in added_cond_kwargs
    student_calling = "teacher"
    honours_force_upcast = True

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler_config: dict[str, Any],
        *,
        max_sequence_length: int,
        prompts: str | os.PathLike[str] | Sequence[str] | None = None,
        guidance_scale: float | None = 4.5,
        pipeline_class: str | None = None,
    ):
        spec = spec_from_pixart(transformer, vae, text_encoder, max_sequence_length, dict(scheduler_config))
        Teacher.__init__(self, spec, guidance_scale=guidance_scale)
        self.transformer, self.vae, self.text_encoder, self.tokenizer = (
            transformer,
            vae,
            text_encoder,
            tokenizer,
        )
        self.max_sequence_length = int(max_sequence_length)
        known = isinstance(pipeline_class, str) and pipeline_class in MAX_LENGTH
        self.pipeline_class = pipeline_class if known else None  # model_index.json's
        self.prompts = read_prompts(prompts)
        height, width = spec.image_shape[1:]
        self.micro = torch.tensor([[height, width, height / width]], dtype=torch.float32)
        # read once from the loaded transformer: a trainable copy may be wrapped (DDP, compile)
        self.micro_conditions = bool(getattr(transformer, "use_additional_conditions", False))
        self._null = None
        self._cache = OrderedDict()
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.transformer, self.vae, self.text_encoder]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PixArtTeacher:
        super().to(device, dtype)
        self.micro = self.micro.to(self.device)
        return self

    @torch.no_grad()
    def encode_parts(self, prompts: list[str]) -> dict[str, Tensor]:
        texts, masks = [], []
        for start in range(0, len(prompts), ENCODE_BATCH):
            chunk = [p.lower().strip() for p in prompts[start : start + ENCODE_BATCH]]
            tokens = self.tokenizer(
                chunk,
                padding="max_length",
                max_length=self.max_sequence_length,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            )
            mask = tokens.attention_mask.to(self.device)
            texts.append(self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0])
            masks.append(mask)
        return {"text": torch.cat(texts), "mask": torch.cat(masks)}

    def condition_from_parts(self, parts: dict[str, Tensor], prompts: list[str] | None = None) -> Condition:
        return Condition(text_embeds=parts["text"], prompts=prompts, extras={MASK: parts["mask"]})

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        if cond is None or cond.text_embeds is None:
            cond = self.null_condition(x_t.shape[0])
        n = x_t.shape[0]
        mask = cond.extras.get(MASK)
        added: dict[str, Tensor | None] = {"resolution": None, "aspect_ratio": None}
        if self.micro_conditions:
            micro = self.micro.to(x_t.device, self.dtype).expand(n, -1)
            added = {"resolution": micro[:, :2], "aspect_ratio": micro[:, 2:]}
        return self.transformer(
            x_t,
            encoder_hidden_states=cond.text_embeds.to(x_t.device, self.dtype),
            encoder_attention_mask=None if mask is None else mask.to(x_t.device),
            timestep=t.to(x_t.device),
            added_cond_kwargs=added,
        ).sample

    def denoiser(self) -> nn.Module:
        return self.transformer

    def with_denoiser(self, module: nn.Module) -> PixArtTeacher:
        return self._view(transformer=module)

    def pipeline_components(self) -> PipelineComponents:
        return PipelineComponents(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoding="t5",
            text_max_length=self.max_sequence_length,
            pipeline_class=self.pipeline_class,
        )


@dataclass(frozen=True)
class PixArtOptions(HubTeacherOptions):
    prompts: str | os.PathLike[str] | Sequence[str] | None = None  # a list, or a file with one per line
    guidance_scale: float | None = 4.5  # the PixArt pipelines' default
    max_sequence_length: int | None = None  # None: the pipeline's (α 120, Σ 300)


@takes_options(PixArtOptions)
def load(options: PixArtOptions) -> PixArtTeacher:
    """A teacher from a PixArtAlphaPipeline / PixArtSigmaPipeline folder, hub id or cached snapshot
    (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5EncoderModel, T5Tokenizer

    o = options
    source = resolve_source(o.path, o.local_files_only)
    index_path = source.fetch("model_index.json")
    pipeline = read_json(index_path).get("_class_name") if index_path is not None else None
    folder = find_model_folder(source, ("transformer",))
    if folder is None:
        raise UserError(
            f"{source} is a single model folder: pixart needs a PixArtAlphaPipeline or PixArtSigmaPipeline folder"
        )
    config = read_config(source, folder)
    if config.get("norm_type") != "ada_norm_single":
        raise UserError(
            f"{source.where(folder)}/config.json: norm_type = {config.get('norm_type')!r} is not 'ada_norm_single': "
            "not a PixArt transformer (a DiT with ada_norm_zero loads as dit@PATH)"
        )
    for part in ("vae", "text_encoder"):
        require_component(source, part, "pixart")
    length = o.max_sequence_length or MAX_LENGTH.get(str(pipeline))
    if length is None:
        raise UserError(
            f"{source}: model_index.json names {pipeline!r}, not PixArtAlphaPipeline or PixArtSigmaPipeline, so the "
            "T5 length is unknown: pass --set teacher.max_sequence_length=120 (α) or 300 (Σ)"
        )
    scheduler_config = load_scheduler_config(source, folder)
    weights = {"allow_pickle": o.allow_pickle, "dtype": o.dtype}
    teacher = PixArtTeacher(
        load_pretrained(PixArtTransformer2DModel, source, folder, **weights),
        load_pretrained(AutoencoderKL, source, "vae", **weights),
        load_pretrained(T5EncoderModel, source, "text_encoder", dtype_kwarg="dtype", **weights),
        load_pretrained(T5Tokenizer, source, "tokenizer", weights=False),
        scheduler_config,
        max_sequence_length=length,
        prompts=o.prompts,
        guidance_scale=o.guidance_scale,
        pipeline_class=pipeline,
    )
    return teacher.to("cpu", parse_dtype(o.dtype))
