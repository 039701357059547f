"""`ddpm-unet`: any diffusers UNet2DModel with its DDPM-style scheduler as a teacher."""

from __future__ import annotations

from typing import Any


from torch import Tensor, nn

from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Condition, Teacher

SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")


def spec_from_unet(unet: nn.Module, scheduler_config: dict[str, Any], *, family: str = "ddpm-unet") -> TeacherSpec:
    """A TeacherSpec read off a UNet2DModel config and a diffusers scheduler config."""
    cfg = unet.config
    channels = cfg.in_channels
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    learned = cfg.out_channels == 2 * channels
    variance_type = "learned_range" if learned else scheduler_config.get("variance_type", "fixed_small")
    if variance_type not in ("fixed_small", "fixed_large", "learned_range"):
        variance_type = "learned_range" if learned else "fixed_small"
    num_class_embeds = getattr(cfg, "num_class_embeds", None)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="pixel",
        num_train_timesteps=int(scheduler_config.get("num_train_timesteps", 1000)),
        schedule={k: scheduler_config[k] for k in SCHEDULE_KEYS if scheduler_config.get(k) is not None},
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        variance_type=variance_type,
        clip_sample=bool(scheduler_config.get("clip_sample", False)),
        clip_sample_range=float(scheduler_config.get("clip_sample_range", 1.0)),
        # Convention: the last class embedding is the null label used for classifier-free guidance.
        conditioning="class" if num_class_embeds else "none",
        num_classes=(num_class_embeds - 1) if num_class_embeds else None,
        family=family,
    )


class DDPMUNetTeacher(Teacher):
    """A diffusers UNet2DModel (eps, v or sample prediction; fixed or learned variance)."""

    def __init__(self, unet: nn.Module, scheduler_config: dict[str, Any], *, guidance_scale: float | None = None):
        super().__init__(spec_from_unet(unet, dict(scheduler_config)), guidance_scale=guidance_scale)
        self.unet = unet
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.unet]

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        labels = cond.labels if cond is not None else None
        return self.unet(x_t, t.to(x_t.device), class_labels=labels).sample


