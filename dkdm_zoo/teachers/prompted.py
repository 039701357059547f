"""What every prompt-conditioned transformer family shares (sd3, flux, sana): prompts from a list or
a file, conditions drawn and stored by reference (one int64 a sample), encoded once per prompt by
the family's own diffusers pipeline (``encode_prompt``: the exact text path the pipeline samples
with) and kept in a small device cache, the null condition of guidance, and the latent geometry.

A family implements ``encode(prompts)`` and ``encode_null()`` (each a ``Condition`` whose
``text_embeds`` are what a scratch student attends to and whose ``extras`` are the further tensors
its own network takes: pooled projections, attention masks), plus ``model_output``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.sampling.latents import decode_latents
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import PipelineComponents, Teacher
from dkdm_zoo.teachers.condition import Condition
from dkdm_zoo.teachers.latent_sd import read_prompts

ENCODE_BATCH = 16  # prompts per text-encoder call (T5-XXL / Gemma states are large)
ENCODE_CACHE = 256  # encoded prompts kept on the device
NULL_PROMPT = -1  # the reference of the empty prompt "", the null condition of guidance


def vae_factor(vae: nn.Module) -> int:
    """The VAE's spatial compression: DC-AE's own ratio (32), else 2 ** (levels - 1) as the pipelines compute."""
    ratio = getattr(vae, "spatial_compression_ratio", None)
    if isinstance(ratio, int):
        return ratio
    return 2 ** (len(vae.config.block_out_channels) - 1)


def text_spec(
    *,
    family: str,
    latent_channels: int,
    latent_size: int,
    vae: nn.Module,
    fields: dict[str, Any],
    text_embed_dim: int,
    text_seq_len: int,
) -> TeacherSpec:
    """The spec of a text-conditional latent flow teacher."""
    factor = vae_factor(vae)
    image_channels = int(
        getattr(vae.config, "out_channels", None) or vae.config.in_channels
    )  # DC-AE: in only
    return TeacherSpec(
        sample_shape=(latent_channels, latent_size, latent_size),
        space="latent",
        **fields,
        conditioning="text",
        text_embed_dim=int(text_embed_dim),
        text_seq_len=int(text_seq_len),
        image_shape=(image_channels, latent_size * factor, latent_size * factor),
        family=family,
    )


def as_float32(cond: Condition, prompts: list[str] | None = None) -> Condition:
    """A condition with float32 states (the cache keeps the encoders' dtype): what students and methods
    receive whatever the teacher's dtype; the teacher's own network casts back to its own."""

    def cast(v: Tensor) -> Tensor:
        return v.float() if v.is_floating_point() else v

    return Condition(
        text_embeds=None if cond.text_embeds is None else cast(cond.text_embeds),
        prompts=prompts,
        extras={k: cast(v) for k, v in cond.extras.items()},
    )


class PromptedTeacher(Teacher):
    """A latent text-to-image teacher whose prompts a diffusers pipeline object encodes."""

    #: the attribute that holds the denoising network (``denoiser``/``with_denoiser``)
    network_attr = "transformer"

    def __init__(
        self,
        spec: TeacherSpec,
        pipe: Any,
        *,
        prompts: str | os.PathLike[str] | Sequence[str] | None,
        guidance_scale: float | None,
    ):
        super().__init__(spec, guidance_scale=guidance_scale)
        self.pipe = pipe  # the family's diffusers pipeline: its encode_prompt is the text path
        self.vae = pipe.vae
        self.transformer = getattr(pipe, self.network_attr)
        # the dtype the weights were loaded in: moving to a device must not make a float32 copy of 8B parameters
        self.dtype = next(self.transformer.parameters()).dtype
        self.prompts = read_prompts(prompts)
        self._null: Condition | None = None
        self._cache: OrderedDict[int, Condition] = OrderedDict()

    # -- what a family implements --------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> Condition:
        raise NotImplementedError

    def encode_null(self) -> Condition:
        return self.encode([""])

    def text_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        return [self.transformer, self.vae, *self.text_modules()]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptedTeacher:
        self._null = None  # re-encoded on the new device / dtype
        self._cache = OrderedDict()
        super().to(device, dtype)
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        return as_float32(self._encode_all(prompts), prompts=list(prompts))

    def _encode_all(self, prompts: list[str]) -> Condition:
        """Encoded in the text encoders' dtype, ``ENCODE_BATCH`` prompts a call."""
        parts = [self.encode(prompts[i : i + ENCODE_BATCH]) for i in range(0, len(prompts), ENCODE_BATCH)]
        return Condition.cat(parts)

    def _require_prompts(self) -> Sequence[str]:
        if not self.prompts:
            raise UserError(
                f"{self.spec.family} needs prompts to draw conditions: set teacher.prompts (a list, or a "
                "text file with one prompt per line)"
            )
        return self.prompts

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> Condition:
        prompts = self._require_prompts()
        device = generator.device if generator is not None else "cpu"
        index = torch.randint(0, len(prompts), (n,), generator=generator, device=device)
        return self.encode_prompts([prompts[i] for i in index.tolist()])

    def draw_refs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(self._require_prompts()), n, dtype=np.int64)

    def null_ref(self) -> int:
        return NULL_PROMPT

    @torch.no_grad()
    def conditions_from_refs(self, refs: np.ndarray | None) -> Condition | None:
        """The referenced prompts' conditions from a small cache; only uncached ones are encoded."""
        if refs is None:
            return None
        missing = sorted({int(r) for r in refs} - self._cache.keys())
        prompts = [r for r in missing if r != NULL_PROMPT]
        if NULL_PROMPT in missing:
            self._cache[NULL_PROMPT] = self._null_encoded()
        if prompts:
            texts = self._require_prompts()
            encoded = self._encode_all([texts[r] for r in prompts])
            for i, ref in enumerate(prompts):
                self._cache[ref] = encoded.select(torch.tensor([i]))
        for ref in refs.tolist():  # most recently used last
            self._cache.move_to_end(int(ref))
        while len(self._cache) > ENCODE_CACHE:
            self._cache.popitem(last=False)
        return as_float32(Condition.cat([self._cache[int(r)] for r in refs.tolist()]))

    def _null_encoded(self) -> Condition:
        if self._null is None:
            self._null = self.encode_null()
        return self._null

    @torch.no_grad()
    def null_condition(self, n: int) -> Condition:
        null = as_float32(self._null_encoded())
        return Condition(
            text_embeds=null.text_embeds.expand(n, *null.text_embeds.shape[1:]),
            prompts=[""] * n,
            extras={k: v.expand(n, *v.shape[1:]) for k, v in null.extras.items()},
        )

    def condition_or_null(self, cond: Condition | None, n: int) -> Condition:
        if cond is None or cond.text_embeds is None:
            return self.null_condition(n)
        return cond

    def denoiser(self) -> nn.Module:
        return self.transformer

    def with_denoiser(self, module: nn.Module) -> PromptedTeacher:
        return self._view(transformer=module)

    @torch.no_grad()
    def decode(self, samples: Tensor) -> Tensor:
        """Latents -> images in [-1, 1] with the VAE's scaling (and shift) factor."""
        return decode_latents(self.vae, samples, dtype=self.dtype)

    def text_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the pipeline's encode_prompt that this teacher encodes with."""
        return {"max_sequence_length": self.max_sequence_length}

    def pipeline_components(self) -> PipelineComponents:
        """The VAE and every text component: an exported student encodes prompts with the family
        pipeline's own encode_prompt (``dkdm_zoo.pipelines.family_text_states``), as this teacher did."""
        from dkdm_zoo.pipelines import TEXT_PIPELINES

        name = type(self.pipe).__name__
        parts = {key: getattr(self.pipe, key, None) for key in TEXT_PIPELINES[name]}
        return PipelineComponents(
            vae=self.vae,
            text_encoder=parts.pop("text_encoder"),
            tokenizer=parts.pop("tokenizer"),
            text_pipeline=name,
            text_components={k: v for k, v in parts.items() if v is not None},
            text_kwargs=self.text_kwargs(),
            pipeline_class=name,
        )
