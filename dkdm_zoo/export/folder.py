"""A trained student as a diffusers pipeline folder that plain diffusers loads and samples.

- unconditional pixel-space UNet students: ``DDPMPipeline`` (a plain ``UNet2DModel``);
- text-conditional latent UNet students (Stable Diffusion teachers): ``StableDiffusionPipeline``
  with the teacher's VAE, text encoder and tokenizer and a plain ``UNet2DConditionModel``;
- class-conditional latent ``DiTTransformer2DModel`` students: ``DiTPipeline`` with the teacher's VAE;
- everything else (class-conditional or latent students, DiT / ConvNeXt / plugin architectures,
  BOOT one-step generators): ``dkdm_zoo.pipelines.DKDMZooPipeline``.

Every pipeline carries a ``DDPMScheduler`` with the teacher's schedule (betas, T, variance,
clipping) and eps prediction, the student's target, with "trailing" timesteps as dkdm-zoo's own
sampler uses; swap it with ``SomeScheduler.from_config(pipe.scheduler.config)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import (
    DDPMPipeline,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    ModelMixin,
    UNet2DConditionModel,
    UNet2DModel,
)

from dkdm_zoo.errors import UserError
from dkdm_zoo.pipelines import Denoiser, DKDMZooPipeline
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import plain_copy
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.students.teacher_net import is_teacher_network, lora_network
from dkdm_zoo.teachers.base import PipelineComponents

SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")


def student_scheduler(
    spec: TeacherSpec, *, variance: bool = True, prediction_type: str = "epsilon", **extra: Any
) -> Any:
    """The teacher's schedule with eps prediction; ``variance=False`` for pipelines that drop a
    learned variance (DiTPipeline): they get the fixed posterior variance instead. A flow-matching
    teacher's student predicts its velocity on its path: the teacher's own FlowMatchEuler scheduler."""
    if spec.process == "flow":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(
            {k: v for k, v in spec.schedule.items() if not k.startswith("_")}
        )
    variance_type = spec.variance_type if variance or not spec.learned_variance else "fixed_small"
    return DDPMScheduler(
        **extra,
        num_train_timesteps=spec.num_train_timesteps,
        **{k: v for k, v in spec.schedule.items() if k in SCHEDULE_KEYS},
        variance_type=variance_type,
        clip_sample=spec.clip_sample,
        clip_sample_range=spec.clip_sample_range,
        prediction_type=prediction_type,  # students predict eps; a teacher's own network its own type
        timestep_spacing="trailing",
    )


def _plain(model: ModelMixin, cls: type[ModelMixin]) -> ModelMixin:
    return plain_copy(model, cls).eval()


def pipeline_kind(student: ModelMixin, spec: TeacherSpec, components: PipelineComponents) -> str:
    """The diffusers pipeline class a student is exported as (a teacher-network student: its network's)."""
    student = student.network if is_teacher_network(student) else student
    latent_ok = spec.space == "latent" and components.vae is not None
    if isinstance(student, OneStepGenerator) or spec.process == "flow":  # no stock pipeline samples these
        return DKDMZooPipeline.__name__
    if isinstance(student, UNet2DModel) and spec.space == "pixel" and spec.conditioning == "none":
        return DDPMPipeline.__name__
    if isinstance(student, UNet2DConditionModel) and spec.conditioning == "text" and latent_ok:
        return "StableDiffusionPipeline"
    if isinstance(student, DiTTransformer2DModel) and spec.conditioning == "class" and latent_ok:
        return DiTPipeline.__name__
    return DKDMZooPipeline.__name__


def save_pipeline(
    student: ModelMixin, spec: TeacherSpec, components: PipelineComponents, folder: str | Path
) -> str:
    """Write ``student`` as a diffusers pipeline into ``folder``; returns the pipeline class name."""
    if spec.space == "latent" and components.vae is None:
        raise UserError("a latent-space student needs its teacher's VAE to become a pipeline")
    if spec.conditioning == "text" and (components.text_encoder is None or components.tokenizer is None):
        raise UserError("a text-conditional student needs its teacher's text encoder and tokenizer")
    kind = pipeline_kind(student, spec, components)
    lora = lora_network(student)
    if lora is not None:  # the pipeline holds merged weights; the adapters go beside it (diffusers LoRA)
        student = _with_merged(student, lora)
    student = student.eval()
    prediction = "epsilon"
    if is_teacher_network(student) and kind != DKDMZooPipeline.__name__:
        # the teacher's own pipeline class holds the network itself, read as its own prediction type
        prediction, student = student.config.prediction_type, student.network
    if kind == DDPMPipeline.__name__:
        pipe = DDPMPipeline(
            unet=_plain(student, UNet2DModel), scheduler=student_scheduler(spec, prediction_type=prediction)
        )
    elif kind == "StableDiffusionPipeline":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=_plain(student, UNet2DConditionModel),
            # steps_offset only moves "leading" timesteps; StableDiffusionPipeline insists on 1
            scheduler=student_scheduler(spec, variance=False, prediction_type=prediction, steps_offset=1),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif kind == DiTPipeline.__name__:
        pipe = DiTPipeline(
            transformer=_plain(student, DiTTransformer2DModel),
            vae=components.vae,
            scheduler=student_scheduler(spec, variance=False, prediction_type=prediction),
        )
    else:
        pipe = DKDMZooPipeline(
            student=student if isinstance(student, OneStepGenerator) else Denoiser.wrap(student),
            scheduler=student_scheduler(spec),
            vae=components.vae if spec.space == "latent" else None,
            text_encoder=components.text_encoder if spec.conditioning == "text" else None,
            tokenizer=components.tokenizer if spec.conditioning == "text" else None,
            sample_shape=spec.sample_shape,
            num_classes=spec.num_classes if spec.conditioning == "class" else None,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    if (
        lora is not None
        and hasattr(type(pipe), "save_lora_weights")
        and hasattr(lora.network, "load_lora_adapter")
    ):
        from peft.utils import get_peft_model_state_dict

        # `load_lora_weights(FOLDER/lora)` on the teacher's own pipeline applies it to the teacher
        type(pipe).save_lora_weights(
            Path(folder) / LORA_FOLDER, unet_lora_layers=get_peft_model_state_dict(lora.network)
        )
    return kind


LORA_FOLDER = "lora"


def _with_merged(student: ModelMixin, lora: Any) -> ModelMixin:
    """``student`` with its LoRA network merged into full weights (a one-step generator rewrapped)."""
    merged = lora.merged()
    if student is lora:
        return merged
    generation = {
        k: student.config[k] for k in ("input_scale", "timestep", "prediction_type", "alpha", "sigma")
    }
    return OneStepGenerator.wrap(merged, student.config.channels, **generation)
