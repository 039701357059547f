"""`flux`: FLUX.1 schnell and dev as teachers.

FluxTransformer2DModel on 16-channel VAE latents packed 2x2 into 64-channel tokens, with position
ids for image tokens (row, column) and text tokens (zeros), as FluxPipeline builds them. The
teacher's samples, and so every student, live in the UNPACKED latent space (16, H, W); packing
happens inside ``model_output``. Prompts are encoded by ``FluxPipeline.encode_prompt``: T5 states
(max_sequence_length x joint_attention_dim) — what a scratch student attends to — and CLIP-L's
pooled output (``extras["pooled_projections"]``).

- schnell (guidance_embeds false): no guidance at all; FlowMatchEuler shift 1.0.
- dev (guidance_embeds true): the guidance scale is an INPUT of the network (distilled guidance,
  FluxPipeline's ``guidance_scale``, default 3.5), with no negative branch; the dynamic shift is
  resolved at the teacher's image token count (``teachers.flow_schedulers``).

Sampling is FluxPipeline's: Euler on sigmas np.linspace(1, 1/N, N) shifted by the scheduler. The
image size is fixed per teacher (``resolution``, default 1024 px as the pipeline's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
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
from dkdm_zoo.teachers.flow_schedulers import GRID_KEY, LINSPACE_GRID
from dkdm_zoo.teachers.loading import parse_dtype
from dkdm_zoo.teachers.prompted import PromptedTeacher, text_spec, vae_factor
from dkdm_zoo.teachers.schedulers import read_schedule

FAMILY = "flux"
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default T5 length
DEFAULT_RESOLUTION = 1024  # FluxPipeline's default_sample_size 128 x the VAE's 8
DEFAULT_DEV_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale (embedded)


class FluxTeacher(PromptedTeacher):
    """FluxTransformer2DModel + VAE + CLIP-L / T5, sampled on its flow path."""

    def __init__(
        self,
        pipe: Any,
        scheduler_config: dict[str, Any],
        *,
        prompts: Any = None,
        guidance_scale: float | None = None,
        max_sequence_length: int | None = None,
        resolution: int | None = None,
    ):
        cfg = pipe.transformer.config
        self.max_sequence_length = int(max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH)
        factor = vae_factor(pipe.vae)
        resolution = int(resolution or DEFAULT_RESOLUTION)
        if resolution <= 0 or resolution % (2 * factor):
            raise UserError(
                f"flux: resolution = {resolution} is not a positive multiple of {2 * factor} (the VAE's "
                f"{factor}x times the 2x2 packing): pass --set teacher.resolution=1024, for example"
            )
        channels = cfg.in_channels // 4
        if channels * 4 != cfg.in_channels or channels != pipe.vae.config.latent_channels:
            raise UserError(
                f"flux: the transformer takes {cfg.in_channels} packed channels but the VAE has "
                f"{pipe.vae.config.latent_channels} latent channels (x 4 when packed): use one pipeline's parts"
            )
        if cfg.pooled_projection_dim != pipe.text_encoder.config.hidden_size:
            raise UserError(
                f"flux: the transformer takes {cfg.pooled_projection_dim}-dim pooled projections but the CLIP "
                f"encoder gives {pipe.text_encoder.config.hidden_size}: use one pipeline's parts"
            )
        self.guidance_embeds = bool(cfg.guidance_embeds)
        if not self.guidance_embeds and guidance_scale is not None:
            raise UserError(
                f"flux: this transformer has no guidance embedding (FLUX.1-schnell style), so guidance_scale = "
                f"{guidance_scale} would do nothing: drop teacher.guidance_scale"
            )
        self.embedded_guidance = (
            float(guidance_scale if guidance_scale is not None else DEFAULT_DEV_GUIDANCE)
            if self.guidance_embeds
            else None
        )
        size = resolution // factor
        fields = read_schedule(
            scheduler_config, learned=False, where=FAMILY, flow=True, image_seq_len=(size // 2) ** 2
        )
        fields["schedule"] = {**fields["schedule"], GRID_KEY: LINSPACE_GRID}
        spec = text_spec(
            family=FAMILY,
            latent_channels=channels,
            latent_size=size,
            vae=pipe.vae,
            fields=fields,
            text_embed_dim=cfg.joint_attention_dim,
            text_seq_len=self.max_sequence_length,
        )
        # no classifier-free guidance: dev's guidance is an input of the network, schnell has none
        super().__init__(spec, pipe, prompts=prompts, guidance_scale=None)
        self.to("cpu")

    def text_modules(self) -> list[nn.Module]:
        return [self.pipe.text_encoder, self.pipe.text_encoder_2]

    def encode(self, prompts: list[str]) -> Condition:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return Condition(text_embeds=embeds, extras={"pooled_projections": pooled})

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        from diffusers import FluxPipeline

        cond = self.condition_or_null(cond, x_t.shape[0])
        b, c, h, w = x_t.shape
        device, dtype = x_t.device, self.dtype
        packed = FluxPipeline._pack_latents(x_t, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype)
        text = cond.text_embeds.to(device, dtype)
        txt_ids = torch.zeros(text.shape[1], 3, device=device, dtype=dtype)
        guidance = (
            torch.full((b,), self.embedded_guidance, device=device, dtype=torch.float32)
            if self.guidance_embeds
            else None
        )
        out = self.transformer(
            hidden_states=packed,
            timestep=(t.to(device, dtype) / 1000),  # FluxPipeline passes t / 1000
            guidance=guidance,
            pooled_projections=cond.extras["pooled_projections"].to(device, dtype),
            encoder_hidden_states=text,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        factor = vae_factor(self.vae)
        return FluxPipeline._unpack_latents(out, h * factor, w * factor, factor)


@dataclass(frozen=True)
class FluxOptions(PromptedTeacherOptions):
    guidance_scale: float | None = None  # dev: embedded guidance (None: FluxPipeline's 3.5); schnell: none
    resolution: int | None = None  # image height and width in pixels (None: 1024, FluxPipeline's default)


@takes_options(FluxOptions)
def load(options: FluxOptions) -> FluxTeacher:
    """A teacher from a FluxPipeline folder, hub id or cached snapshot."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    source, folder = pipeline_source(options, FAMILY, "FluxPipeline")
    load = Components(source, options, FAMILY)
    components = {
        "transformer": load.model(FluxTransformer2DModel, folder),
        "vae": load.model(AutoencoderKL, "vae"),
        "text_encoder": load.model(CLIPTextModel, "text_encoder", transformers=True),
        "text_encoder_2": load.model(T5EncoderModel, "text_encoder_2", transformers=True),
        "tokenizer": load.tokenizer(CLIPTokenizer, "tokenizer"),
        "tokenizer_2": load.tokenizer(T5TokenizerFast, "tokenizer_2"),
    }
    scheduler_config = load.scheduler_config(folder)
    teacher = FluxTeacher(
        family_pipeline("FluxPipeline", "FlowMatchEulerDiscreteScheduler", components, scheduler_config),
        scheduler_config,
        prompts=options.prompts,
        guidance_scale=options.guidance_scale,
        max_sequence_length=options.max_sequence_length,
        resolution=options.resolution,
    )
    return teacher.to("cpu", parse_dtype(options.dtype))
