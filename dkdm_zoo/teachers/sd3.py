"""`sd3`: Stable Diffusion 3 / 3.5 (medium, large) as a teacher.

SD3Transformer2DModel (MMDiT; 3.5-medium's MMDiT-X with dual attention and RMS q/k norm) on 16
latent channels, a rectified-flow path (FlowMatchEulerDiscreteScheduler, shift 3.0), three text
encoders: CLIP-L and CLIP-G (penultimate states, pooled projections) and T5-XXL. Prompts are encoded
by ``StableDiffusion3Pipeline.encode_prompt`` itself, so the text states are the pipeline's:
the CLIP states concatenated and zero-padded to T5's width, followed by T5's (77 + max_sequence_length
tokens x joint_attention_dim) — what a scratch student attends to — and the pooled CLIP-L + CLIP-G
projections (``extras["pooled_projections"]``). Real classifier-free guidance with the empty prompt
(all three encoders) as the null condition, as the pipeline does (default scale 7.0). A folder
without text_encoder_3 (T5 dropped to save memory) samples with zero T5 states, as the pipeline does.
``resolution`` (pixels) picks another image size within the position embedding, as the pipeline's height/width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.teachers.condition import Condition
from dkdm_zoo.teachers.flow_loading import (
    Components,
    PromptedTeacherOptions,
    family_pipeline,
    pipeline_source,
)
from dkdm_zoo.teachers.loading import parse_dtype
from dkdm_zoo.teachers.prompted import PromptedTeacher, text_spec, vae_factor
from dkdm_zoo.teachers.schedulers import read_schedule

FAMILY = "sd3"
DEFAULT_MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default T5 length


class SD3Teacher(PromptedTeacher):
    """SD3Transformer2DModel + VAE + CLIP-L / CLIP-G / T5, sampled on its flow path."""

    def __init__(
        self,
        pipe: Any,
        scheduler_config: dict[str, Any],
        *,
        prompts: Any = None,
        guidance_scale: float | None = 7.0,
        max_sequence_length: int | None = None,
        resolution: int | None = None,
    ):
        cfg = pipe.transformer.config
        factor = vae_factor(pipe.vae)
        latent_size = cfg.sample_size if resolution is None else int(resolution) // factor
        step = factor * cfg.patch_size
        if resolution is not None and (resolution <= 0 or resolution % step):
            raise UserError(
                f"sd3: resolution = {resolution} is not a positive multiple of {step} (the VAE's {factor}x times "
                f"the patch size {cfg.patch_size}): pass --set teacher.resolution=1024, for example"
            )
        if latent_size // cfg.patch_size > cfg.pos_embed_max_size:
            raise UserError(
                f"sd3: resolution = {resolution} is beyond the transformer's position embedding "
                f"({cfg.pos_embed_max_size} patches a side = {cfg.pos_embed_max_size * step} px)"
            )
        self.max_sequence_length = int(max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH)
        pooled = sum(int(e.config.projection_dim) for e in (pipe.text_encoder, pipe.text_encoder_2))
        if pooled != cfg.pooled_projection_dim:
            raise UserError(
                f"sd3: the transformer takes {cfg.pooled_projection_dim}-dim pooled projections but the CLIP "
                f"encoders give {pooled}: use the transformer and text encoders of one pipeline"
            )
        if pipe.text_encoder_3 is not None and pipe.text_encoder_3.config.d_model != cfg.joint_attention_dim:
            raise UserError(
                f"sd3: the transformer attends to {cfg.joint_attention_dim}-dim text but text_encoder_3 gives "
                f"{pipe.text_encoder_3.config.d_model}: use the transformer and text encoders of one pipeline"
            )
        if cfg.in_channels != pipe.vae.config.latent_channels:
            raise UserError(
                f"sd3: the transformer takes {cfg.in_channels} channels but the VAE has "
                f"{pipe.vae.config.latent_channels} latent channels: use the VAE of the same pipeline"
            )
        fields = read_schedule(scheduler_config, learned=False, where=FAMILY, flow=True)
        spec = text_spec(
            family=FAMILY,
            latent_channels=cfg.in_channels,
            latent_size=latent_size,
            vae=pipe.vae,
            fields=fields,
            text_embed_dim=cfg.joint_attention_dim,
            text_seq_len=pipe.tokenizer_max_length + self.max_sequence_length,
        )
        super().__init__(spec, pipe, prompts=prompts, guidance_scale=guidance_scale)
        self.to("cpu")

    def text_modules(self) -> list[nn.Module]:
        pipe = self.pipe
        return [m for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3) if m is not None]

    def encode(self, prompts: list[str]) -> Condition:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return Condition(text_embeds=embeds, extras={"pooled_projections": pooled})

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        cond = self.condition_or_null(cond, x_t.shape[0])
        return self.transformer(
            hidden_states=x_t,
            timestep=t.to(x_t.device, self.dtype),
            encoder_hidden_states=cond.text_embeds.to(x_t.device, self.dtype),
            pooled_projections=cond.extras["pooled_projections"].to(x_t.device, self.dtype),
            return_dict=False,
        )[0]


@dataclass(frozen=True)
class SD3Options(PromptedTeacherOptions):
    guidance_scale: float | None = 7.0  # StableDiffusion3Pipeline's default
    resolution: int | None = (
        None  # image height and width in pixels (None: the transformer's sample_size x 8)
    )


@takes_options(SD3Options)
def load(options: SD3Options) -> SD3Teacher:
    """A teacher from a StableDiffusion3Pipeline folder, hub id or cached snapshot."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    source, folder = pipeline_source(options, FAMILY, "StableDiffusion3Pipeline")
    load = Components(source, options, FAMILY)
    has_t5 = source.fetch("config.json", "text_encoder_3") is not None
    components = {
        "transformer": load.model(SD3Transformer2DModel, folder),
        "vae": load.model(AutoencoderKL, "vae"),
        "text_encoder": load.model(CLIPTextModelWithProjection, "text_encoder", transformers=True),
        "text_encoder_2": load.model(CLIPTextModelWithProjection, "text_encoder_2", transformers=True),
        "text_encoder_3": load.model(T5EncoderModel, "text_encoder_3", transformers=True) if has_t5 else None,
        "tokenizer": load.tokenizer(CLIPTokenizer, "tokenizer"),
        "tokenizer_2": load.tokenizer(CLIPTokenizer, "tokenizer_2"),
        "tokenizer_3": load.tokenizer(T5TokenizerFast, "tokenizer_3") if has_t5 else None,
    }
    scheduler_config = load.scheduler_config(folder)
    teacher = SD3Teacher(
        family_pipeline(
            "StableDiffusion3Pipeline", "FlowMatchEulerDiscreteScheduler", components, scheduler_config
        ),
        scheduler_config,
        prompts=options.prompts,
        guidance_scale=options.guidance_scale,
        max_sequence_length=options.max_sequence_length,
        resolution=options.resolution,
    )
    return teacher.to("cpu", parse_dtype(options.dtype))
