"""The teacher spec: the torch-free contract between teachers, students and methods.

Students are built FROM a spec and methods read the schedule FROM it, so no student or method
special-cases a teacher family.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Space = Literal["pixel", "latent"]
PredictionType = Literal["epsilon", "v_prediction", "sample", "flow"]
#: the noise process: a discrete variance-preserving chain (DDPM), or a rectified-flow path
#: x_s = (1 - s) x0 + s eps with s in [0, 1] (networks take s * T as their timestep)
Process = Literal["vp", "flow"]
VarianceType = Literal["fixed_small", "fixed_large", "learned_range"]
Conditioning = Literal["none", "class", "text"]


@dataclass(frozen=True)
class TeacherSpec:
    """Everything a student or a method needs to know about a teacher, and nothing else.

    sample_shape is (C, H, W) of the space diffusion runs in (latents for a latent teacher);
    image_shape is (C, H, W) of decoded images.
    """

    sample_shape: tuple[int, int, int]
    space: Space = "pixel"
    num_train_timesteps: int = 1000
    # vp: diffusers DDPMScheduler keys (beta_schedule, beta_start, beta_end or trained_betas);
    # flow: the teacher's flow-matching scheduler config (its class and keys, as saved)
    schedule: dict[str, Any] = field(
        default_factory=lambda: {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    )
    prediction_type: PredictionType = "epsilon"
    variance_type: VarianceType = "fixed_small"
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    value_range: tuple[float, float] = (-1.0, 1.0)
    conditioning: Conditioning = "none"
    num_classes: int | None = None
    text_embed_dim: int | None = None
    text_seq_len: int | None = None
    image_shape: tuple[int, int, int] | None = None
    family: str = ""
    process: Process = "vp"

    def __post_init__(self) -> None:
        if (self.process == "flow") != (self.prediction_type == "flow"):
            raise ValueError("a flow-matching process goes with flow (velocity) prediction, and only with it")
        if self.process == "flow" and self.variance_type == "learned_range":
            raise ValueError("a flow-matching teacher has no learned variance")
        if self.conditioning == "class" and not self.num_classes:
            raise ValueError("a class-conditional teacher needs num_classes")
        if self.conditioning == "text" and not self.text_embed_dim:
            raise ValueError("a text-conditional teacher needs text_embed_dim")
        if self.image_shape is None:
            object.__setattr__(self, "image_shape", tuple(self.sample_shape))

    @property
    def student_prediction(self) -> PredictionType:
        """What a student's first C output channels predict: eps, or the velocity on a flow path."""
        return "flow" if self.process == "flow" else "epsilon"

    @property
    def learned_variance(self) -> bool:
        return self.variance_type == "learned_range"

    @property
    def channels(self) -> int:
        return self.sample_shape[0]

    @property
    def resolution(self) -> int:
        return self.sample_shape[1]

    @property
    def out_channels(self) -> int:
        """Output channels a student needs: eps, plus the variance interpolation where learned."""
        return self.channels * (2 if self.learned_variance else 1)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown teacher spec keys: {sorted(unknown)}")
        kw = dict(data)
        for key in ("sample_shape", "image_shape", "value_range"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)
