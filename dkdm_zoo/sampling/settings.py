"""How to sample: steps, sampler, guidance, seed and batch, declared and checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from dkdm_zoo.registry.options import NonNegativeInt, OptionSet, PositiveInt

Sampler = Literal["ddim", "ddpm"]


@dataclass(frozen=True)
class SamplingSettings(OptionSet):
    """What `sample`, `eval`, previews and the end-of-run report sample with. The same seed gives the
    same images (and, for DDIM, whatever the batch size). One-step generators ignore ``steps`` and
    ``sampler``; their guidance was distilled in."""

    SECTION: ClassVar[str] = "sampling"

    steps: PositiveInt = 50  # network evaluations per image of a multi-step model (at most T)
    sampler: Sampler = "ddim"  # "trailing" timesteps, as the exported pipelines' scheduler
    guidance_scale: float | None = None  # None: the source's own (a teacher's option, 1 for students)
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 256  # images per network batch
