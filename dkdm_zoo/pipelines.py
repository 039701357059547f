"""``DKDMZooPipeline``: the diffusers pipeline of every student no stock diffusers pipeline runs.

Class-conditional or latent students, DiT / ConvNeXt / plugin architectures, text-conditional
students that are not a ``UNet2DConditionModel``, and one- or K-step generators (BOOT, SiD,
Diff-Instruct: K network calls per image). It samples with the scheduler saved beside it (the
teacher's schedule, eps prediction), decodes latents with the teacher's VAE and encodes prompts with
the teacher's text encoder, and takes ``class_labels`` / ``prompt`` / ``num_inference_steps`` / ``guidance_scale`` /
``generator`` / ``output_type`` as diffusers' pipelines do.

Loading: diffusers resolves a folder's ``_class_name`` on the ``diffusers`` module only and imports
no module a folder names (beyond its own libraries and modules already imported), so importing
this module registers the class there; then ``DiffusionPipeline.from_pretrained(folder)`` works, as
does ``DKDMZooPipeline.from_pretrained(folder)``. The student's own class is named in
``student/config.json`` and imported only from diffusers, dkdm_zoo or an installed dkdm-zoo plugin
(``dkdm_zoo.registry.classes``).
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import ConfigMixin, DDPMScheduler, DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from dkdm_zoo.registry.classes import class_reference, model_from_reference, public_config
from dkdm_zoo.sampling.guidance import applies, guided
from dkdm_zoo.sampling.latents import decode_latents
from dkdm_zoo.students.base import condition_kwargs
from dkdm_zoo.students.one_step import OneStepGenerator, is_one_step

__all__ = ["DKDMZooPipeline", "Denoiser", "ModelMixin", "OneStepGenerator"]  # ModelMixin: see Denoiser


class Denoiser(ModelMixin, ConfigMixin):
    """A multi-step student behind the student contract, saved with its class reference so that a
    pipeline folder rebuilds any architecture (plugins included) without dkdm-zoo's registry.

    (diffusers finds a component's loader by looking up ``ModelMixin`` in the component's module,
    so this module keeps that name.)
    """

    @register_to_config
    def __init__(self, model_class: str, model_config: dict[str, Any]):
        super().__init__()
        self.model = model_from_reference(
            model_class, model_config, where="the pipeline's student/config.json"
        )

    @classmethod
    def wrap(cls, model: ModelMixin) -> Denoiser:
        """A Denoiser holding a copy of ``model``'s weights."""
        denoiser = cls(class_reference(model), public_config(model.config))
        denoiser.model.load_state_dict(model.state_dict())
        return denoiser.to(model.device)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        return self.model(sample, timestep, **condition_kwargs(class_labels, encoder_hidden_states))


#: how an exported pipeline encodes prompts (``PipelineComponents.text_encoding``)
TEXT_ENCODINGS = ("clip", "sdxl", "t5")


#: the diffusers pipelines whose own ``encode_prompt`` gives a student's text states, and the text
#: components each takes (a student attends to the same states its flow teacher's network did)
TEXT_PIPELINES: dict[str, tuple[str, ...]] = {
    "StableDiffusion3Pipeline": (
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
    ),
    "FluxPipeline": ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"),
    "SanaPipeline": ("text_encoder", "tokenizer"),
}


def family_text_states(
    name: str,
    parts: dict[str, Any],
    prompts: list[str],
    device: torch.device,
    kwargs: dict[str, Any],
    *,
    null: bool = False,
) -> Tensor:
    """Text states (B, L, D) of ``prompts`` by the ``name`` pipeline's own ``encode_prompt``, run on a
    pipeline object that holds only its text components; ``null``: the negative prompt's states, as the
    pipeline encodes them for guidance (SANA's without its prompt template)."""
    pipe = getattr(diffusers, name)(
        **{key: None for key in ("transformer", "vae", "scheduler")},
        **{key: parts.get(key) for key in TEXT_PIPELINES[name]},
    )
    if name == "StableDiffusion3Pipeline":
        out = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            **kwargs,
        )
    elif name == "FluxPipeline":
        out = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device, **kwargs)
    elif null:
        length = kwargs.get("max_sequence_length", 300)
        dtype = pipe.text_encoder.dtype
        out = pipe._get_gemma_prompt_embeds(prompts, device, dtype, max_sequence_length=length)
    else:
        out = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device, **kwargs)
    return out[0]


class DKDMZooPipeline(DiffusionPipeline):
    """Sample a dkdm-zoo student: multi-step (a ``Denoiser``) or one-step (a ``OneStepGenerator``).

    ``sample_shape`` is (C, H, W) of the space the student runs in (latents for a latent teacher);
    ``num_classes`` is set for class-conditional students (label ``num_classes`` is the null label).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->text_encoder_3->student->vae"
    _optional_components = [
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "text_encoder_3",
        "tokenizer_3",
    ]

    def __init__(
        self,
        student: ModelMixin,
        scheduler: SchedulerMixin,
        vae: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        sample_shape: tuple[int, int, int] | list[int] = (3, 32, 32),
        num_classes: int | None = None,
        text_encoder_2: Any = None,
        tokenizer_2: Any = None,
        text_encoding: str = "clip",
        text_max_length: int | None = None,
        null_zeros: bool = False,
        text_encoder_3: Any = None,
        tokenizer_3: Any = None,
        text_pipeline: str | None = None,
        text_kwargs: dict[str, Any] | None = None,
        sampling_grid: str | None = None,
    ):
        super().__init__()
        if text_encoding not in TEXT_ENCODINGS:
            raise ValueError(f"text_encoding = {text_encoding!r} is not one of {', '.join(TEXT_ENCODINGS)}")
        if text_pipeline is not None and text_pipeline not in TEXT_PIPELINES:
            raise ValueError(f"text_pipeline = {text_pipeline!r} is not one of {', '.join(TEXT_PIPELINES)}")
        # every declared component, None included, or loading refuses
        self.register_modules(
            student=student,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3,
            tokenizer_3=tokenizer_3,
        )
        self.register_to_config(
            sample_shape=[int(v) for v in sample_shape],
            num_classes=num_classes,
            text_encoding=text_encoding,  # SDXL's two CLIPs, PixArt's T5 (the SD family: one CLIP)
            text_max_length=text_max_length,
            null_zeros=null_zeros,
            text_pipeline=text_pipeline,  # SD3 / FLUX / SANA: their pipeline's own encode_prompt
            text_kwargs=dict(text_kwargs or {}),
            sampling_grid=sampling_grid,  # "linspace": the teacher's pipeline samples FLUX's grid
        )
        self.image_processor = VaeImageProcessor(do_normalize=True)

    @property
    def one_step(self) -> bool:
        return is_one_step(self.student)

    def _labels(self, class_labels: Any, device: torch.device) -> Tensor:
        classes = self.config.num_classes
        if class_labels is None:  # a class-conditional model fed no class makes no digit at all
            raise ValueError(
                f"this pipeline is class-conditional: pass class_labels (one per image, 0..{classes - 1}), "
                f"e.g. class_labels=[0, 1, 2, 3]"
            )
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if bool(((labels < 0) | (labels >= classes)).any()):
            raise ValueError(f"class_labels must be in 0..{classes - 1}")
        return labels.to(device)

    def _text(self, prompts: list[str], device: torch.device, *, null: bool = False) -> Tensor:
        """The states the student attends to, encoded as its teacher's pipeline encodes them."""
        name = self.config.get("text_pipeline")
        if name is not None:  # SD3 / FLUX / SANA: the family pipeline's own text path
            parts = {part: getattr(self, part, None) for part in TEXT_PIPELINES[name]}
            kwargs = dict(self.config.get("text_kwargs") or {})
            return family_text_states(name, parts, prompts, device, kwargs, null=null).to(self.student.dtype)
        encoding = self.config.get("text_encoding", "clip")
        if encoding == "sdxl":  # both CLIP encoders' penultimate states, concatenated
            states = []
            for tokenizer, encoder in (
                (self.tokenizer, self.text_encoder),
                (self.tokenizer_2, self.text_encoder_2),
            ):
                ids = tokenizer(
                    prompts,
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids
                states.append(encoder(ids.to(device), output_hidden_states=True).hidden_states[-2])
            return torch.cat(states, dim=-1).to(self.student.dtype)
        if encoding == "t5":  # PixArt: lower-cased, the pipeline's length, with the attention mask
            tokens = self.tokenizer(
                [p.lower().strip() for p in prompts],
                padding="max_length",
                max_length=self.config.text_max_length,
                truncation=True,
                return_tensors="pt",
            )
            mask = tokens.attention_mask.to(device)
            return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0].to(
                self.student.dtype
            )
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0].to(self.student.dtype)

    def _conditions(
        self, batch_size: int, class_labels: Any, prompt: Any, device: torch.device
    ) -> tuple[int, dict[str, Tensor], dict[str, Tensor] | None]:
        """Batch size, the conditional inputs and the null inputs (for guidance) of the student."""
        if self.text_encoder is not None:
            if class_labels is not None:
                raise ValueError("this pipeline is text-conditional: pass prompt, not class_labels")
            if prompt is None:
                raise ValueError("this pipeline is text-conditional: pass prompt='...' (or a list)")
            prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
            embeds = self._text(prompts, device)
            null = self._text([""], device, null=True).expand(len(prompts), -1, -1)
            if self.config.get("null_zeros", False):  # SDXL's force_zeros_for_empty_prompt, as the teacher's
                null = torch.zeros_like(null)
            return len(prompts), {"encoder_hidden_states": embeds}, {"encoder_hidden_states": null}
        if prompt is not None:
            raise ValueError("this pipeline takes no text prompt")
        if self.config.num_classes is not None:
            if isinstance(class_labels, int):
                class_labels = [class_labels] * batch_size
            labels = self._labels(class_labels, device)
            return (
                len(labels),
                {"class_labels": labels},
                {"class_labels": torch.full_like(labels, self.config.num_classes)},
            )
        if class_labels is not None:
            raise ValueError("this pipeline is unconditional: it takes no class_labels")
        return batch_size, {}, None

    def _scheduler_takes_variance(self) -> bool:
        """DDPM's learned_range step uses the student's variance channels; other schedulers take eps only."""
        return (
            isinstance(self.scheduler, DDPMScheduler)
            and self.scheduler.config.variance_type == "learned_range"
        )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | list[int] | Tensor | None = None,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Images from the student: ``num_inference_steps`` scheduler steps (ignored by generators:
        one network call per image, K for a K-step generator, at the timesteps it was trained for).
        The student learned the teacher's guided prediction, so ``guidance_scale`` (classifier-free
        guidance on top) stays 1.0 unless you want more."""
        device = self._execution_device
        channels, height, width = self.config.sample_shape
        n, cond, null = self._conditions(batch_size, class_labels, prompt, device)
        dtype = self.student.dtype
        noise = randn_tensor((n, channels, height, width), generator=generator, device=device, dtype=dtype)
        if self.one_step:
            if guidance_scale != 1.0:
                raise ValueError(
                    "a one-step generator's guidance was distilled in: leave guidance_scale at 1.0"
                )
            # a K-step generator's fresh noise of steps 2..K, drawn after the initial noise as
            # `dkdm-zoo sample` draws it; exactly K network calls
            step_noise = None
            if self.student.num_steps > 1:
                shape = (self.student.num_steps - 1, *noise.shape)
                step_noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            samples = self.student.generate(noise, **cond, step_noise=step_noise)
        else:
            samples = self._denoise(noise, cond, null, num_inference_steps, guidance_scale, generator)
        if output_type == "latent":
            images = samples
        else:
            images = samples
            if self.vae is not None:
                images = decode_latents(self.vae, samples)
            images = self.image_processor.postprocess(images.float().clamp(-1, 1), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _denoise(
        self,
        x: Tensor,
        cond: dict[str, Tensor],
        null: dict[str, Tensor] | None,
        steps: int,
        guidance_scale: float,
        generator: Any,
    ) -> Tensor:
        channels = x.shape[1]
        guide = null is not None and applies(guidance_scale)
        inputs = {k: torch.cat([v, null[k]]) for k, v in cond.items()} if guide else cond
        if self.config.get("sampling_grid") == "linspace":  # FluxPipeline's grid: sigmas linspace(1, 1/N, N)
            self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), device=x.device)
        else:
            self.scheduler.set_timesteps(steps, device=x.device)
        step_kwargs: dict[str, Any] = {"generator": generator}
        if "use_clipped_model_output" in inspect.signature(self.scheduler.step).parameters:
            # DDIM with clipping: eps re-derived from the clipped x0, as dkdm-zoo's own DDIM step
            step_kwargs["use_clipped_model_output"] = True
        x = x * getattr(self.scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers start at 1
        for t in self.progress_bar(self.scheduler.timesteps):
            # flow-matching schedulers take the sample as it is (they have no scale_model_input)
            scale = getattr(self.scheduler, "scale_model_input", None)
            x_in = scale(x, t) if scale is not None else x
            x_in = torch.cat([x_in, x_in]) if guide else x_in
            out = self.student(x_in, t.expand(len(x_in)).to(x.device), **inputs)
            if guide:
                out = guided(*out.chunk(2), guidance_scale, channels)
            if not self._scheduler_takes_variance():
                out = out[:, :channels]
            x = self.scheduler.step(out, t, x, **step_kwargs).prev_sample
        return x


# DiffusionPipeline.from_pretrained looks a folder's _class_name up on the diffusers module.
setattr(diffusers, DKDMZooPipeline.__name__, DKDMZooPipeline)
