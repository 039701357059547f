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
from dkdm_zoo.teachers.base import PipelineComponents

SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")
FLOW_SCHEDULER_CLASSES = ("FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler")


def student_scheduler(spec: TeacherSpec, *, variance: bool = True, **extra: Any) -> Any:
    """The teacher's schedule with eps prediction; ``variance=False`` for pipelines that drop a
    learned variance (DiTPipeline): they get the fixed posterior variance instead. A flow-matching
    teacher's student predicts its velocity on its path: the teacher's own FlowMatchEuler scheduler."""
    if spec.process == "flow":  # the teacher's own flow scheduler class (SANA's: DPM-Solver, flow sigmas)
        import diffusers

        name = str(spec.schedule.get("_class_name", "FlowMatchEulerDiscreteScheduler"))
        if name not in FLOW_SCHEDULER_CLASSES:  # run.json is data: it names no other class
            raise UserError(
                f"the teacher's flow scheduler {name!r} is not one of {', '.join(FLOW_SCHEDULER_CLASSES)}"
            )
        return getattr(diffusers, name).from_config(
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
        prediction_type="epsilon",  # students always predict eps
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
    """The diffusers pipeline class a student is exported as."""
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
    student = student.eval()
    if kind == DDPMPipeline.__name__:
        pipe = DDPMPipeline(unet=_plain(student, UNet2DModel), scheduler=student_scheduler(spec))
    elif kind == "StableDiffusionPipeline":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=_plain(student, UNet2DConditionModel),
            # steps_offset only moves "leading" timesteps; StableDiffusionPipeline insists on 1
            scheduler=student_scheduler(spec, variance=False, steps_offset=1),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif kind == DiTPipeline.__name__:
        pipe = DiTPipeline(
            transformer=_plain(student, DiTTransformer2DModel),
            vae=components.vae,
            scheduler=student_scheduler(spec, variance=False),
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
            **(_family_text(components) if spec.conditioning == "text" else {}),
            sampling_grid=spec.schedule.get("_sampling_sigmas") if spec.process == "flow" else None,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    return kind
