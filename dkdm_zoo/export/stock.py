"""Students made from a modern teacher (its own network: a copy, a pruned copy, a LoRA) in the
teacher's OWN diffusers pipeline class: ``sdxl`` -> StableDiffusionXLPipeline, ``pixart`` ->
PixArtSigmaPipeline / PixArtAlphaPipeline (whichever the teacher's model_index.json names), ``sd3`` ->
StableDiffusion3Pipeline, ``flux`` -> FluxPipeline, ``sana`` -> SanaPipeline. One table, one builder.

The scheduler makes the pipeline's own loop sample what ``dkdm-zoo sample`` samples:

- VP (sdxl, pixart), multi-step: DPM-Solver++ of order 1 (which IS DDIM) on the teacher's betas,
  "trailing" timesteps, the final step to sigma 0, in the network's own prediction type: the same
  chain as dkdm-zoo's DDIM for every step count. (SDXL's own EulerDiscreteScheduler cannot: with
  "trailing" timesteps it starts from sigma_max * noise, not from the VP chain's x_T = noise.)
- flow (sd3, flux, sana): the teacher's own flow scheduler, as its pipeline samples the teacher.
- a one-step generator made from the teacher: only where that scheduler makes exactly its one
  network call (``generator_call``); other generators stay in ``DKDMZooPipeline``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, EulerDiscreteScheduler, ModelMixin

from dkdm_zoo.errors import UserError
from dkdm_zoo.export.lora_card import INFO as LORA_INFO
from dkdm_zoo.export.lora_card import LORA_FOLDER
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.one_step import OneStepGenerator
from dkdm_zoo.students.teacher_net import TeacherNetwork, is_teacher_network
from dkdm_zoo.teachers.base import PipelineComponents
from dkdm_zoo.teachers.schedulers import SAMPLER_KEYS

SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")
FLOW_SCHEDULER_CLASSES = ("FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler")


@dataclass(frozen=True)
class StockFamily:
    pipelines: tuple[str, ...]  # the diffusers pipeline classes a teacher of the family may be
    network: str  # the pipeline component that holds the network
    # teacher options that are arguments of the pipeline's __call__ under the same name
    call_options: tuple[str, ...] = ("max_sequence_length",)


FAMILIES: dict[str, StockFamily] = {
    "sdxl": StockFamily(
        ("StableDiffusionXLPipeline",), "unet", ("original_size", "crops_coords_top_left", "target_size")
    ),
    "pixart": StockFamily(("PixArtSigmaPipeline", "PixArtAlphaPipeline"), "transformer"),
    "sd3": StockFamily(("StableDiffusion3Pipeline",), "transformer"),
    "flux": StockFamily(("FluxPipeline",), "transformer"),
    "sana": StockFamily(("SanaPipeline",), "transformer"),
}
STOCK_PIPELINES = frozenset(name for family in FAMILIES.values() for name in family.pipelines)


def flow_scheduler(spec: TeacherSpec) -> Any:
    """A flow teacher's own scheduler (FlowMatchEuler; SANA's DPM-Solver with flow sigmas), every
    key of its config as read."""
    name = str(spec.schedule.get("_class_name", "FlowMatchEulerDiscreteScheduler"))
    if name not in FLOW_SCHEDULER_CLASSES:  # run.json is data: it names no other class
        raise UserError(
            f"the teacher's flow scheduler {name!r} is not one of {', '.join(FLOW_SCHEDULER_CLASSES)}"
        )
    return getattr(diffusers, name).from_config(
        {k: v for k, v in spec.schedule.items() if not k.startswith("_")}
    )


def _vp_schedule(spec: TeacherSpec) -> dict[str, Any]:
    # the teacher's sampler settings (its spacing, solver) are not how dkdm-zoo samples the student
    known = {*SCHEDULE_KEYS, *SAMPLER_KEYS}
    unknown = sorted(k for k in spec.schedule if not k.startswith("_") and k not in known)
    if unknown:
        raise UserError(
            f"run.json teacher_spec.schedule: unknown keys {unknown} for a stock pipeline's scheduler"
        )
    return {
        "num_train_timesteps": spec.num_train_timesteps,
        **{k: v for k, v in spec.schedule.items() if k in SCHEDULE_KEYS},
    }


def stock_scheduler(spec: TeacherSpec, prediction: str, generator: OneStepGenerator | None = None) -> Any:
    """The scheduler with which the stock pipeline's loop samples what ``dkdm-zoo sample`` samples."""
    if spec.process == "flow":
        return flow_scheduler(spec)
    common = {**_vp_schedule(spec), "prediction_type": prediction, "timestep_spacing": "trailing"}
    if generator is not None:  # its one call: Euler from sigma(t) to 0 (``generator_call``)
        return EulerDiscreteScheduler(**common)
    return DPMSolverMultistepScheduler(
        **common,
        solver_order=1,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
        lower_order_final=True,
    )


def generator_call(generator: OneStepGenerator, spec: TeacherSpec) -> dict[str, Any] | None:
    """The pipeline arguments with which the stock scheduler makes exactly the generator's network
    call and returns its x0, or None where none can (then it stays a DKDMZooPipeline)."""
    if generator.num_steps != 1:
        return None  # steps 2..K re-noise with FRESH noise: the stock pipelines' steps are deterministic
    t, alpha, sigma = generator.step_values(0)
    cfg = generator.config
    if cfg.prediction_type != spec.student_prediction or abs(cfg.input_scale - sigma) > 1e-6:
        return None  # BOOT's g(z, 0) read as a sample: no scheduler reads the network that way
    if spec.process == "flow":
        if spec.schedule.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
            return None  # SANA's DPM-Solver's one-step grid starts below sigma 1 on unscaled noise
        if float(t) != spec.num_train_timesteps or sigma != 1.0:
            return None  # the pipelines start at sigma 1 from unscaled noise: only s = 1 is their first call
        return {"num_inference_steps": 1}  # one Euler step from 1 to 0: x0 = z - v
    if not isinstance(t, int):
        return None
    # Euler with "trailing" spacing starts at sigma_t * z (init_noise_sigma is sigma_max) and feeds
    # z sigma_t / sqrt(sigma_t^2 + 1) = sqrt(1 - abar_t) z: the generator's input; one step to x0
    acp = float(EulerDiscreteScheduler(**_vp_schedule(spec)).alphas_cumprod[t])
    if abs(alpha - acp**0.5) > 1e-5 or abs(sigma - (1 - acp) ** 0.5) > 1e-5:
        return None
    return {"timesteps": [t]}


def stock_kind(student: ModelMixin, spec: TeacherSpec, components: PipelineComponents) -> str | None:
    """The teacher's own pipeline class for a student made from its network, or None."""
    family = FAMILIES.get(spec.family or "")
    if family is None or components.pipeline_class not in family.pipelines:
        return None
    generator = student if isinstance(student, OneStepGenerator) else None
    network = generator.backbone if generator is not None else student
    if not is_teacher_network(network) or spec.clip_sample:  # these pipelines do not clip x0
        return None
    if generator is not None and generator_call(generator, spec) is None:
        return None
    return components.pipeline_class


def stock_pipeline(
    kind: str, student: ModelMixin, spec: TeacherSpec, components: PipelineComponents
) -> DiffusionPipeline:
    """``kind`` (the teacher's pipeline class) holding the student's network, the teacher's VAE and
    text components and ``stock_scheduler``; ``student`` is LoRA-merged already."""
    family = FAMILIES[str(spec.family)]
    generator = student if isinstance(student, OneStepGenerator) else None
    teacher_net: TeacherNetwork = generator.backbone if generator is not None else student  # type: ignore[assignment]
    available: dict[str, Any] = {
        family.network: teacher_net.network.eval(),
        "scheduler": stock_scheduler(spec, teacher_net.config.prediction_type, generator),
        "vae": components.vae,
        "text_encoder": components.text_encoder,
        "tokenizer": components.tokenizer,
        "text_encoder_2": components.text_encoder_2,
        "tokenizer_2": components.tokenizer_2,
        **components.text_components,
    }
    cls = getattr(diffusers, kind)
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    missing = [k for k, p in params.items() if p.default is p.empty and available.get(k) is None]
    if missing:
        raise UserError(
            f"{kind} needs {', '.join(missing)}, which the {spec.family} teacher does not provide"
        )
    kwargs = {k: v for k, v in available.items() if k in params and v is not None}
    if "force_zeros_for_empty_prompt" in params:  # SDXL: the teacher's model_index.json value
        kwargs["force_zeros_for_empty_prompt"] = components.null_zeros
    if "add_watermarker" in params:  # dkdm-zoo's samples carry no watermark
        kwargs["add_watermarker"] = False
    return cls(**kwargs)


def save_lora(
    pipeline_class: type, lora: TeacherNetwork, folder: str | Path, subfolder: str | None = LORA_FOLDER
) -> bool:
    """The LoRA student's adapters in ``folder/subfolder`` (beside a merged pipeline: ``lora/``; alone:
    the root) by the pipeline class's own ``save_lora_weights``, so that
    ``TeacherPipeline.from_pretrained(teacher).load_lora_weights(folder, subfolder=...)`` applies them.
    False where the class loads no LoRA (DDPMPipeline, DiTPipeline, the PixArt pipelines)."""
    save = getattr(pipeline_class, "save_lora_weights", None)
    if save is None or not hasattr(lora.network, "load_lora_adapter"):
        return False
    from peft.utils import get_peft_model_state_dict

    params = inspect.signature(save).parameters
    part = "unet" if "unet_lora_layers" in params else "transformer"
    kwargs: dict[str, Any] = {f"{part}_lora_layers": get_peft_model_state_dict(lora.network)}
    if f"{part}_lora_adapter_metadata" in params:  # its alpha (scale alpha / rank), not assumed = rank
        settings = lora.config.lora
        kwargs[f"{part}_lora_adapter_metadata"] = {
            "r": int(settings["rank"]),
            "lora_alpha": float(settings["alpha"]),
            "target_modules": list(settings["targets"]),
        }
    save(Path(folder) / subfolder if subfolder else Path(folder), **kwargs)
    return True


def network_config(folder: Path) -> dict[str, Any]:
    """The exported network's config: the merged pipeline's ``transformer/``, else the one an
    adapters-only export records in ``LORA_INFO`` (``export.adapters``)."""
    path = Path(folder) / "transformer" / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    return json.loads((Path(folder) / LORA_INFO).read_text())["network_config"]


def call_arguments(
    kind: str, folder: Path, spec: TeacherSpec, teacher_options: dict[str, Any], one_step_times: list | None
) -> dict[str, Any]:
    """What the card's snippet passes to ``kind``'s ``__call__`` to sample as ``dkdm-zoo sample``: the
    student's steps (a generator's one call), its guidance (none on top of the distilled one; FLUX-dev's
    embedded scale is the teacher's), the teacher's image size and the teacher options the pipeline takes."""
    family = next(f for f in FAMILIES.values() if kind in f.pipelines)
    args: dict[str, Any] = {"prompt": "a photo of a cat"}
    if one_step_times is None:
        args["num_inference_steps"] = 50
    elif spec.process == "flow":
        args["num_inference_steps"] = 1
    else:
        args["timesteps"] = [int(t) for t in one_step_times]
    if kind == "FluxPipeline":
        config = network_config(folder)
        if config.get("guidance_embeds"):  # dev: the guidance the student's network was called with
            from dkdm_zoo.teachers.flux import DEFAULT_DEV_GUIDANCE

            args["guidance_scale"] = float(teacher_options.get("guidance_scale") or DEFAULT_DEV_GUIDANCE)
    else:  # the student learned the teacher's guided prediction: no classifier-free guidance on top
        args["guidance_scale"] = 1.0
    args["height"], args["width"] = (int(v) for v in spec.image_shape[1:])
    for key in family.call_options:
        value = teacher_options.get(key)
        if value is not None:
            args[key] = tuple(value) if isinstance(value, list) else value
    if kind == "SanaPipeline" and teacher_options.get("complex_human_instruction") is False:
        args["complex_human_instruction"] = None
    if kind in ("SanaPipeline", "PixArtSigmaPipeline", "PixArtAlphaPipeline"):
        args["use_resolution_binning"] = False  # the teacher samples its own size, no aspect-ratio bins
    if kind.startswith("PixArt"):
        args["clean_caption"] = False  # the teacher lower-cases and strips prompts, nothing more
    return args
