"""A trained student as a diffusers pipeline folder that plain diffusers loads and samples.

- unconditional pixel-space UNet students: ``DDPMPipeline`` (a plain ``UNet2DModel``);
- text-conditional latent UNet students (Stable Diffusion teachers): ``StableDiffusionPipeline``
  with the teacher's VAE, text encoder and tokenizer and a plain ``UNet2DConditionModel``;
- class-conditional latent ``DiTTransformer2DModel`` students: ``DiTPipeline`` with the teacher's VAE;
- students made from an sdxl / pixart / sd3 / flux / sana teacher's own network (copy, pruned, LoRA;
  one-step generators where a stock scheduler makes their one call): the teacher's own pipeline
  class (``export.stock``);
- everything else (class-conditional or latent students, DiT / ConvNeXt / plugin architectures,
  BOOT one-step generators): ``dkdm_zoo.pipelines.DKDMZooPipeline``.

Every pipeline carries a ``DDIMScheduler`` with the teacher's schedule (betas, T, clipping), eps
prediction (the student's target), "trailing" timesteps and the final step to alpha 1: with 50
steps (the card's snippet) it samples what ``dkdm-zoo sample`` samples; swap it with
``SomeScheduler.from_config(pipe.scheduler.config)``. Flow students carry the teacher's
FlowMatchEuler scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    ModelMixin,
    UNet2DConditionModel,
    UNet2DModel,
)

from dkdm_zoo.errors import UserError
from dkdm_zoo.export.stock import (
    FLOW_SCHEDULER_CLASSES,  # noqa: F401 - its old home (export.stock owns it now)
    LORA_FOLDER,  # noqa: F401 - its old home
    SCHEDULE_KEYS,
    STOCK_PIPELINES,
    flow_scheduler,
    save_lora,
    stock_kind,
    stock_pipeline,
    stock_scheduler,
)
from dkdm_zoo.pipelines import Denoiser, DKDMZooPipeline
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import plain_copy
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.students.teacher_net import is_teacher_network, lora_network
from dkdm_zoo.teachers.base import PipelineComponents


def student_scheduler(spec: TeacherSpec, *, prediction_type: str = "epsilon", **extra: Any) -> Any:
    """The scheduler that makes a pipeline's defaults sample what ``dkdm-zoo sample`` samples: DDIM
    (eta 0) on the teacher's schedule with "trailing" timesteps, the final step to alpha 1, the
    teacher's clipping and eps prediction (a scratch student's target; a teacher's own network
    keeps its own type). Its variance is irrelevant (DDIM adds no noise);
    ``DDPMScheduler.from_config(pipe.scheduler.config, variance_type=...)`` gives the ancestral
    sampler. A flow-matching teacher's student predicts the velocity on its path: the teacher's own
    flow scheduler class (FlowMatchEuler; SANA's DPM-Solver with flow sigmas)."""
    if spec.process == "flow":
        return flow_scheduler(spec)
    return DDIMScheduler(
        **extra,
        num_train_timesteps=spec.num_train_timesteps,
        **{k: v for k, v in spec.schedule.items() if k in SCHEDULE_KEYS},
        clip_sample=spec.clip_sample,
        clip_sample_range=spec.clip_sample_range,
        prediction_type=prediction_type,  # students predict eps; a teacher's own network its own type
        timestep_spacing="trailing",
        set_alpha_to_one=True,
    )


def pipeline_scheduler(kind: str, student: ModelMixin, spec: TeacherSpec) -> Any:
    """The scheduler a pipeline of ``kind`` holding ``student`` carries, for the classes that load a
    LoRA (the stock ones, StableDiffusionPipeline); None for the others."""
    if kind in STOCK_PIPELINES:
        generator = student if isinstance(student, OneStepGenerator) else None
        network = generator.backbone if generator is not None else student
        return stock_scheduler(spec, network.config.prediction_type, generator)
    if kind == "StableDiffusionPipeline":
        prediction = student.config.prediction_type if is_teacher_network(student) else "epsilon"
        # steps_offset only moves "leading" timesteps; StableDiffusionPipeline insists on 1
        return student_scheduler(spec, prediction_type=prediction, steps_offset=1)
    return None


def _ddpm_pipeline_scheduler(spec: TeacherSpec, prediction: str) -> Any:
    """DDPMPipeline calls its scheduler's step without ``use_clipped_model_output``, so its DDIM would
    not re-derive eps from a clipped x0 as dkdm-zoo's DDIM does: a clipping teacher's student keeps
    the ancestral DDPMScheduler there (what ``dkdm-zoo sample --sampler ddpm`` samples, step for step)."""
    if not spec.clip_sample:
        return student_scheduler(spec, prediction_type=prediction)
    return DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        **{k: v for k, v in spec.schedule.items() if k in SCHEDULE_KEYS},
        variance_type=spec.variance_type,
        clip_sample=True,
        clip_sample_range=spec.clip_sample_range,
        prediction_type=prediction,
        timestep_spacing="trailing",
    )


def _family_text(components: PipelineComponents) -> dict[str, Any]:
    """A flow family's further text components and the pipeline whose encode_prompt uses them."""
    if components.text_pipeline is None:
        return {}
    return {
        **components.text_components,
        "text_pipeline": components.text_pipeline,
        "text_kwargs": components.text_kwargs,
    }


def _plain(model: ModelMixin, cls: type[ModelMixin]) -> ModelMixin:
    return plain_copy(model, cls).eval()


def pipeline_kind(student: ModelMixin, spec: TeacherSpec, components: PipelineComponents) -> str:
    """The diffusers pipeline class a student is exported as (a teacher-network student: its network's)."""
    stock = stock_kind(student, spec, components)  # sdxl / pixart / sd3 / flux / sana: the teacher's own
    if stock is not None:
        return stock
    student = student.network if is_teacher_network(student) else student
    latent_ok = spec.space == "latent" and components.vae is not None
    if isinstance(student, OneStepGenerator) or spec.process == "flow":  # no stock pipeline samples these
        return DKDMZooPipeline.__name__
    if isinstance(student, UNet2DModel) and spec.space == "pixel" and spec.conditioning == "none":
        return DDPMPipeline.__name__
    if (
        isinstance(student, UNet2DConditionModel)
        and spec.conditioning == "text"
        and latent_ok
        and components.text_encoding == "clip"
    ):
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
    if lora is not None:  # merged weights; the adapters beside them (export.adapters writes them alone)
        student = _with_merged(student, lora)
    student = student.eval()
    prediction = "epsilon"
    if kind in STOCK_PIPELINES:
        pipe = stock_pipeline(kind, student, spec, components)
        pipe.save_pretrained(folder, safe_serialization=True)
        if lora is not None:
            save_lora(type(pipe), lora, folder)
        return kind
    held = student  # the student as built (its prediction type), before a teacher network is unwrapped
    if is_teacher_network(student) and kind != DKDMZooPipeline.__name__:
        # the teacher's own pipeline class holds the network itself, read as its own prediction type
        prediction, student = student.config.prediction_type, student.network
    if kind == DDPMPipeline.__name__:
        pipe = DDPMPipeline(
            unet=_plain(student, UNet2DModel), scheduler=_ddpm_pipeline_scheduler(spec, prediction)
        )
    elif kind == "StableDiffusionPipeline":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=_plain(student, UNet2DConditionModel),
            scheduler=pipeline_scheduler(kind, held, spec),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif kind == DiTPipeline.__name__:
        pipe = DiTPipeline(
            transformer=_plain(student, DiTTransformer2DModel),
            vae=components.vae,
            scheduler=student_scheduler(spec, prediction_type=prediction),
        )
    else:
        pipe = DKDMZooPipeline(
            student=student if isinstance(student, OneStepGenerator) else Denoiser.wrap(student),
            scheduler=student_scheduler(spec),
            vae=components.vae if spec.space == "latent" else None,
            text_encoder=components.text_encoder if spec.conditioning == "text" else None,
            tokenizer=components.tokenizer if spec.conditioning == "text" else None,
            **_second_text_encoder(spec, components),
            sample_shape=spec.sample_shape,
            num_classes=spec.num_classes if spec.conditioning == "class" else None,
            **(_family_text(components) if spec.conditioning == "text" else {}),
            sampling_grid=spec.schedule.get("_sampling_sigmas") if spec.process == "flow" else None,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    if lora is not None:  # `load_lora_weights(FOLDER/lora)` on the teacher's own pipeline applies it
        save_lora(type(pipe), lora, folder)
    return kind


def _with_merged(student: ModelMixin, lora: Any) -> ModelMixin:
    """``student`` with its LoRA network merged into full weights (a one-step generator rewrapped)."""
    merged = lora.merged()
    if student is lora:
        return merged
    # every generation setting the generator recorded (its K step times included), the backbone aside
    generation = {
        k: v for k, v in student.config.items()
        if not k.startswith("_") and k not in ("backbone_class", "backbone_config", "channels")
    }  # fmt: skip
    return OneStepGenerator.wrap(merged, student.config.channels, **generation)


def _second_text_encoder(spec: TeacherSpec, components: PipelineComponents) -> dict[str, Any]:
    """SDXL's second encoder and the text encoding of families other than SD's (PixArt's T5 length)."""
    if spec.conditioning != "text" or components.text_encoding == "clip":
        return {}
    return {
        "text_encoder_2": components.text_encoder_2,
        "tokenizer_2": components.tokenizer_2,
        "text_encoding": components.text_encoding,
        "text_max_length": components.text_max_length,
        "null_zeros": components.null_zeros,
    }
