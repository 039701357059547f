"""`sana`: SANA (Efficient-Large-Model/Sana_*_diffusers) as a teacher.

SanaTransformer2DModel (linear attention, patch 1) on DC-AE latents (AutoencoderDC f32c32: 32x
downsampling, 32 channels), conditioned on Gemma-2 hidden states with their attention mask
(``extras["encoder_attention_mask"]``). Prompts are encoded by ``SanaPipeline.encode_prompt``
itself, with the pipeline's "complex human instruction" prompt template (read from SanaPipeline's
own default, not copied) unless ``complex_human_instruction = false``: the first token and the last
max_sequence_length - 1 states, as the pipeline keeps them. The null condition is the empty prompt
without the template, as the pipeline encodes its negative prompt. Real CFG (default 4.5).

The scheduler is SANA's DPMSolverMultistepScheduler with ``prediction_type = "flow_prediction"``,
``use_flow_sigmas`` and ``flow_shift``: read as the rectified-flow path it is. The "ddim" sampler is
the teacher's own: that DPM-Solver++ scheduler steps the velocity, as SanaPipeline loops (an exported
student keeps it); "ddpm" is the stochastic Euler variant on the same flow grid; methods move along
the path with Euler jumps between its levels.
"""

from __future__ import annotations

import inspect
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
from dkdm_zoo.teachers.prompted import PromptedTeacher, text_spec
from dkdm_zoo.teachers.schedulers import read_schedule

FAMILY = "sana"
DEFAULT_MAX_SEQUENCE_LENGTH = 300  # SanaPipeline's default


def pipeline_instruction() -> list[str]:
    """SanaPipeline's own default complex human instruction (its ``__call__`` default)."""
    from diffusers import SanaPipeline

    default = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    return list(default)


class SanaTeacher(PromptedTeacher):
    """SanaTransformer2DModel + DC-AE + Gemma-2, sampled on its flow path."""

    def __init__(
        self,
        pipe: Any,
        scheduler_config: dict[str, Any],
        *,
        prompts: Any = None,
        guidance_scale: float | None = 4.5,
        max_sequence_length: int | None = None,
        complex_human_instruction: bool = True,
    ):
        cfg = pipe.transformer.config
        self.max_sequence_length = int(max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH)
        self.instruction = pipeline_instruction() if complex_human_instruction else None
        if cfg.caption_channels != pipe.text_encoder.config.hidden_size:
            raise UserError(
                f"sana: the transformer takes {cfg.caption_channels}-dim captions but the text encoder gives "
                f"{pipe.text_encoder.config.hidden_size}: use one pipeline's parts"
            )
        if cfg.in_channels != pipe.vae.config.latent_channels:
            raise UserError(
                f"sana: the transformer takes {cfg.in_channels} channels but the VAE has "
                f"{pipe.vae.config.latent_channels} latent channels: use the VAE of the same pipeline"
            )
        fields = read_schedule(scheduler_config, learned=False, where=FAMILY, flow=True)
        spec = text_spec(
            family=FAMILY,
            latent_channels=cfg.in_channels,
            latent_size=cfg.sample_size,
            vae=pipe.vae,
            fields=fields,
            text_embed_dim=cfg.caption_channels,
            text_seq_len=self.max_sequence_length,
        )
        super().__init__(spec, pipe, prompts=prompts, guidance_scale=guidance_scale)
        self.to("cpu")

    def text_modules(self) -> list[nn.Module]:
        return [self.pipe.text_encoder]

    def encode(self, prompts: list[str]) -> Condition:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
            complex_human_instruction=self.instruction,
        )
        return Condition(text_embeds=embeds, extras={"encoder_attention_mask": mask})

    def encode_null(self) -> Condition:
        embeds, mask = self.pipe._get_gemma_prompt_embeds(
            [""],
            device=self.device,
            dtype=self.pipe.text_encoder.dtype,
            max_sequence_length=self.max_sequence_length,
            complex_human_instruction=None,  # the pipeline's negative prompt has no template
        )
        return Condition(text_embeds=embeds, extras={"encoder_attention_mask": mask})

    def text_kwargs(self) -> dict[str, Any]:
        return {
            "max_sequence_length": self.max_sequence_length,
            "complex_human_instruction": self.instruction,
        }

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        cond = self.condition_or_null(cond, x_t.shape[0])
        scale = getattr(self.transformer.config, "timestep_scale", 1.0)
        return self.transformer(
            x_t,
            encoder_hidden_states=cond.text_embeds.to(x_t.device, self.dtype),
            encoder_attention_mask=cond.extras["encoder_attention_mask"].to(x_t.device),
            timestep=t.to(x_t.device) * scale,
            return_dict=False,
        )[0]


@dataclass(frozen=True)
class SanaOptions(PromptedTeacherOptions):
    guidance_scale: float | None = 4.5  # SanaPipeline's default
    complex_human_instruction: bool = True  # SanaPipeline's prompt template before every prompt


@takes_options(SanaOptions)
def load(options: SanaOptions) -> SanaTeacher:
    """A teacher from a SanaPipeline folder, hub id or cached snapshot."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import Gemma2Model, GemmaTokenizerFast

    source, folder = pipeline_source(options, FAMILY, "SanaPipeline")
    load = Components(source, options, FAMILY)
    components = {
        "transformer": load.model(SanaTransformer2DModel, folder),
        "vae": load.model(AutoencoderDC, "vae"),
        "text_encoder": load.model(Gemma2Model, "text_encoder", transformers=True),
        "tokenizer": load.tokenizer(GemmaTokenizerFast, "tokenizer"),
    }
    scheduler_config = load.scheduler_config(folder)
    teacher = SanaTeacher(
        family_pipeline("SanaPipeline", "DPMSolverMultistepScheduler", components, scheduler_config),
        scheduler_config,
        prompts=options.prompts,
        guidance_scale=options.guidance_scale,
        max_sequence_length=options.max_sequence_length,
        complex_human_instruction=options.complex_human_instruction,
    )
    return teacher.to("cpu", parse_dtype(options.dtype))
