"""The Teacher interface: one contract that hides each model family's quirks.

A teacher is frozen (eval mode, no grad). Methods call ``predict`` at per-sample timesteps and
``step`` to advance noisy samples; students are built from ``spec``. Subclasses implement only
``model_output`` (the raw network output for a batch) and, where they need it, conditioning and
decoding.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.diffusion import schedule_for
from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.sampling.chain import sample_denoiser, sample_flow
from dkdm_zoo.sampling.guidance import applies, guided
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.condition import Condition
from dkdm_zoo.teachers.unread import as_fake, is_unread


def host_to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array on ``device`` without waiting for the device (pinned, non-blocking on CUDA)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class TeacherOutput:
    """A teacher prediction in float32: eps and x0 (unclipped), and the learned-variance values."""

    eps: Tensor
    x0: Tensor
    var_values: Tensor | None = None  # learned_range interpolation in [-1, 1], or None


@dataclass
class PipelineComponents:
    """The teacher's networks a diffusers pipeline of its student reuses (None where it has none)."""

    vae: nn.Module | None = None  # latent teachers: decodes samples to images
    text_encoder: nn.Module | None = None  # text teachers: prompts -> encoder hidden states
    tokenizer: Any = None
    # how prompts become the states a student attends to: "clip" (the encoder's last hidden states, SD),
    # "sdxl" (both CLIP encoders' penultimate states, concatenated; zeros as the null prompt), "t5"
    # (lower-cased prompts at text_max_length tokens, with the attention mask: PixArt)
    text_encoding: str = "clip"
    text_encoder_2: nn.Module | None = None
    tokenizer_2: Any = None
    text_max_length: int | None = None
    null_zeros: bool = False  # guidance's null prompt is all zeros (SDXL's force_zeros_for_empty_prompt)
    # families whose text states come from several encoders (SD3, FLUX) or a prompt template (SANA):
    # the diffusers pipeline whose own encode_prompt gives them, its further text components, its kwargs
    text_pipeline: str | None = None
    text_components: dict[str, Any] = field(default_factory=dict)
    text_kwargs: dict[str, Any] = field(default_factory=dict)
    # the teacher's own diffusers pipeline class (its model_index.json's), for `export.stock`
    pipeline_class: str | None = None


class Teacher(ABC):
    """A frozen diffusion model seen through its ``TeacherSpec``."""

    spec: TeacherSpec
    #: how a student holding a copy of this family's network (``--student teacher``) calls it once it is
    #: loaded without the teacher: "diffusers" when ``network(x, t, class_labels=..., encoder_hidden_states=...,
    #: **condition.extras)`` is what ``model_output`` does, else "teacher" (through ``model_output``)
    student_calling: str = "teacher"

    def __init__(self, spec: TeacherSpec, *, guidance_scale: float | None = None):
        self.spec = spec
        self.schedule = schedule_for(spec)  # the noise process: a VP chain or a flow-matching path
        self.guidance_scale = guidance_scale
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    # -- what a family implements -----------------------------------------------------------------
    @abstractmethod
    def modules(self) -> list[nn.Module]:
        """Every network the teacher holds (moved, frozen and cast together)."""

    @abstractmethod
    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        """The raw network output (B, out_channels, H, W) in the teacher's prediction type."""

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> Condition | None:
        """Random conditions for n samples (class labels, prompts); None for unconditional teachers."""
        if self.spec.conditioning == "none":
            return None
        if self.spec.conditioning == "class":
            labels = torch.randint(
                0,
                self.spec.num_classes,
                (n,),
                generator=generator,
                device=generator.device if generator is not None else "cpu",
            )
            return Condition(labels=labels.to(self.device))
        raise NotImplementedError(f"{type(self).__name__} must implement sample_conditions for text")

    # -- conditions by reference: what a pool or a dataset stores per sample ------------------------
    # A reference is one int64 per sample (a class id, a prompt index); ``null_ref`` is the
    # unconditional one. Drawing and storing references costs 8 bytes a sample whatever the
    # condition's size (a 77 x 768 text embedding is 236 KB); ``conditions_from_refs`` builds the
    # batch's conditions on the teacher's device when they are needed.
    def draw_refs(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """n random condition references drawn on the host; None for an unconditional teacher."""
        if self.spec.conditioning == "none":
            return None
        if self.spec.conditioning == "class":
            return rng.integers(0, self.spec.num_classes, n, dtype=np.int64)
        raise NotImplementedError(f"{type(self).__name__} must implement draw_refs for text")

    def null_ref(self) -> int:
        """The reference of the unconditional (classifier-free guidance) condition."""
        if self.spec.conditioning == "class":
            return int(self.spec.num_classes)
        raise NotImplementedError(
            f"{type(self).__name__} has no null reference for {self.spec.conditioning!r}"
        )

    def conditions_from_refs(self, refs: np.ndarray | None) -> Condition | None:
        """The conditions of a batch of references, on the teacher's device (no device read)."""
        if refs is None:
            return None
        if self.spec.conditioning == "class":
            return Condition(labels=host_to_device(refs, self.device))
        raise NotImplementedError(f"{type(self).__name__} must implement conditions_from_refs for text")

    def null_condition(self, n: int) -> Condition | None:
        if self.spec.conditioning == "none":
            return None
        if self.spec.conditioning == "class":
            return Condition(
                labels=torch.full((n,), self.spec.num_classes, dtype=torch.long, device=self.device)
            )
        raise NotImplementedError(f"{type(self).__name__} must implement null_condition for text")

    def make_condition(
        self, *, labels: Sequence[int] | Tensor | None = None, prompts: Sequence[str] | None = None
    ) -> Condition | None:
        """Conditions from user input (class labels or prompts), checked against what the teacher takes."""
        kind = self.spec.conditioning
        what = {"none": "unconditional", "class": "class-conditional", "text": "text-conditional"}[kind]
        name = self.spec.family or type(self).__name__
        if prompts is not None and kind != "text":
            raise UserError(f"teacher '{name}' is {what}: it takes no text prompt; drop the prompt")
        if labels is not None and kind != "class":
            raise UserError(f"teacher '{name}' is {what}: it takes no class labels; drop the labels")
        if prompts is not None:
            return self.encode_prompts([str(p) for p in prompts])
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if bool(((labels < 0) | (labels >= self.spec.num_classes)).any()):
                raise UserError(f"teacher '{name}': class labels must be in 0..{self.spec.num_classes - 1}")
            return Condition(labels=labels.to(self.device))
        return None

    def encode_prompts(self, prompts: list[str]) -> Condition:
        """Text conditions for ``prompts``; text-conditional families implement this."""
        raise UserError(f"teacher '{self.spec.family or type(self).__name__}' cannot encode text prompts")

    def decode(self, samples: Tensor) -> Tensor:
        """Samples in diffusion space -> images in [-1, 1] (identity for pixel-space teachers)."""
        return samples

    def denoiser(self) -> nn.Module:
        """The network ``model_output`` evaluates (a fake-score copy starts from it)."""
        raise IncompatibleError(
            f"teacher '{self.spec.family or type(self).__name__}' exposes no denoising network to copy"
        )

    def with_denoiser(self, module: nn.Module) -> Teacher:
        """A shallow copy of this teacher that evaluates ``module`` instead of its own network
        (same spec, conditioning and decoder); ``module`` may be trainable, DDP-wrapped or compiled."""
        raise IncompatibleError(
            f"teacher '{self.spec.family or type(self).__name__}' cannot evaluate another denoising network"
        )

    def _view(self, **networks: nn.Module) -> Teacher:
        """A shallow copy with some networks replaced; computes in the replacement's dtype."""
        clone = copy.copy(self)
        clone.__dict__.update(networks)
        first = next(iter(networks.values()))
        clone.dtype = next(first.parameters()).dtype
        return clone

    def pipeline_components(self) -> PipelineComponents:
        """What a student's exported pipeline reuses: latent teachers give their VAE, text teachers their
        text encoder and tokenizer (none for pixel-space, unconditional or class-conditional teachers)."""
        return PipelineComponents()

    # -- shared behaviour -----------------------------------------------------------------------
    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Teacher:
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        for module in self.modules():
            if is_unread(module):  # built with its weights unread (teachers.unread): fakes, made anew
                as_fake([module], self.device, self.dtype)
                module.eval().requires_grad_(False)
                continue
            module.to(self.device).eval().requires_grad_(False)
            # Cast only when needed: diffusers' ModelMixin.to warns on every dtype argument.
            if any(p.is_floating_point() and p.dtype != self.dtype for p in module.parameters()):
                module.to(dtype=self.dtype)
        return self

    @torch.no_grad()
    def predict(
        self, x_t: Tensor, t: Tensor, cond: Condition | None = None, guidance_scale: float | None = None
    ) -> TeacherOutput:
        """eps and x0 at per-sample t, with classifier-free guidance when a scale > 1 is set."""
        return self.denoise(x_t, t, cond, guidance_scale)

    def denoise(
        self, x_t: Tensor, t: Tensor, cond: Condition | None = None, guidance_scale: float | None = None
    ) -> TeacherOutput:
        """``predict`` without ``no_grad``: gradients flow to ``x_t`` (and to trainable weights of a
        copy made with ``with_denoiser``), as score-distillation methods (SiD) need."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        x_in = x_t.to(self.dtype)
        if cond is not None and applies(scale):
            null = self.null_condition(len(cond))
            out = self.model_output(
                torch.cat([x_in, x_in]), torch.cat([t, t]), Condition.cat([cond, null])
            ).float()
            out = guided(*out.chunk(2), scale, self.spec.channels)
        else:
            out = self.model_output(x_in, t, cond).float()
        return self._split(out, x_t.float(), t)

    def _split(self, out: Tensor, x_t: Tensor, t: Tensor) -> TeacherOutput:
        c = self.spec.channels
        var_values = out[:, c : 2 * c] if self.spec.learned_variance else None
        eps, x0 = self.schedule.to_eps_x0(out[:, :c], x_t, t, self.spec.prediction_type)
        return TeacherOutput(eps=eps, x0=x0, var_values=var_values)

    @torch.no_grad()
    def step(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Condition | None = None,
        *,
        prediction: TeacherOutput | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, TeacherOutput]:
        """One ancestral step x_t -> x_{t-1} at per-sample t, as the teacher's own sampler does."""
        if self.spec.process == "flow":
            raise IncompatibleError(
                f"teacher '{self.spec.family or type(self).__name__}' is a flow-matching teacher: one step of "
                "a discrete chain is not defined on its path yet (it samples, methods do not train from it yet)"
            )
        pred = self.predict(x_t, t, cond) if prediction is None else prediction
        x_prev = self.schedule.ddpm_step(
            x_t.float(),
            t,
            pred.eps,
            variance_type=self.spec.variance_type,
            var_values=pred.var_values,
            clip_sample=self.spec.clip_sample,
            clip_sample_range=self.spec.clip_sample_range,
            generator=generator,
        )
        return x_prev, pred

    @torch.no_grad()
    def chain_step(
        self,
        x_t: Tensor,
        k: Tensor,
        cond: Condition | None = None,
        *,
        prediction: TeacherOutput | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, TeacherOutput]:
        """One step of the teacher's own training chain, from index k to k - 1 (k = 0 ends clean): the
        ancestral step of a VP chain, the Euler step on a flow path. ``prediction`` is the teacher's
        at ``schedule.time_of(k)`` when the caller has it."""
        t = self.schedule.time_of(k)
        pred = self.predict(x_t, t, cond) if prediction is None else prediction
        if self.spec.process == "flow":
            x_prev = self.schedule.jump(x_t.float(), t, self.schedule.time_of(k - 1), pred.eps, pred.x0)
            return x_prev, pred
        return self.step(x_t, t, cond, prediction=pred, generator=generator)

    def student_target(self, pred: TeacherOutput) -> Tensor:
        """What a student of this teacher predicts, from the teacher's prediction: eps on a VP chain,
        the velocity eps - x0 on a flow path (``spec.student_prediction``)."""
        return pred.eps - pred.x0 if self.spec.process == "flow" else pred.eps

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        steps: int = 50,
        sampler: str = "ddim",
        cond: Condition | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Samples in diffusion space with the reference sampler ("trailing" timesteps)."""
        if cond is None and self.spec.conditioning != "none":
            cond = self.sample_conditions(n, generator)
        if noise is None:
            noise = torch.randn((n, *self.spec.sample_shape), generator=generator).to(self.device)

        if self.spec.process == "flow":

            def predict_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
                pred = self.predict(x, t, cond, guidance_scale)
                return pred.eps, pred.x0

            return sample_flow(
                predict_fn,
                self.schedule,
                noise,
                steps=steps,
                sampler=sampler,
                generator=generator,
                progress=progress,
            )

        def eps_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
            pred = self.predict(x, t, cond, guidance_scale)
            return pred.eps, pred.var_values

        return sample_denoiser(
            eps_fn,
            self.spec,
            self.schedule,
            noise,
            steps=steps,
            sampler=sampler,
            generator=generator,
            progress=progress,
        )
