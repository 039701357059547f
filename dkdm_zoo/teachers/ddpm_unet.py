"""`ddpm-unet`: any diffusers UNet2DModel with its DDPM-style scheduler as a teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Condition, Teacher
from dkdm_zoo.teachers.loading import (
    HubTeacherOptions,
    find_model_folder,
    load_pretrained,
    load_scheduler_config,
    parse_dtype,
    read_config,
    resolve_source,
    schedule_spec_fields,
)


def spec_from_unet(
    unet: nn.Module, scheduler_config: dict[str, Any], *, family: str = "ddpm-unet"
) -> TeacherSpec:
    """A TeacherSpec read off a UNet2DModel config and a diffusers scheduler config."""
    cfg = unet.config
    channels = cfg.in_channels
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    num_class_embeds = getattr(cfg, "num_class_embeds", None)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="pixel",
        **schedule_spec_fields(
            scheduler_config,
            learned=cfg.out_channels == 2 * channels,
            where=family,
            built_as="DDPMScheduler",
            flow=True,  # a UNet2DModel beside a FlowMatchEuler scheduler: a pixel flow teacher
        ),
        # Convention: the last class embedding is the null label used for classifier-free guidance.
        conditioning="class" if num_class_embeds else "none",
        num_classes=(num_class_embeds - 1) if num_class_embeds else None,
        family=family,
    )


class DDPMUNetTeacher(Teacher):
    """A diffusers UNet2DModel (eps, v or sample prediction; fixed or learned variance)."""

    student_calling = "diffusers"  # its network takes the student contract's keywords as they are

    def __init__(
        self, unet: nn.Module, scheduler_config: dict[str, Any], *, guidance_scale: float | None = None
    ):
        super().__init__(spec_from_unet(unet, dict(scheduler_config)), guidance_scale=guidance_scale)
        self.unet = unet
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.unet]

    def denoiser(self) -> nn.Module:
        return self.unet

    def with_denoiser(self, module: nn.Module) -> DDPMUNetTeacher:
        return self._view(unet=module)

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        labels = cond.labels if cond is not None else None
        return self.unet(x_t, t.to(x_t.device), class_labels=labels).sample


@dataclass(frozen=True)
class DDPMUNetOptions(HubTeacherOptions):
    subfolder: str | None = None  # the UNet's folder inside the source (default: found)


@takes_options(DDPMUNetOptions)
def load(options: DDPMUNetOptions) -> DDPMUNetTeacher:
    """A UNet2DModel teacher from a hub id, a cached snapshot, or a local pipeline / flat repository /
    model folder (google/ddpm-cifar10-32 keeps its UNet and scheduler at the repository root).

    Class-conditional UNets (``num_class_embeds``) use their last class embedding as the null
    label for classifier-free guidance; ``dtype`` "float16"/"bfloat16" gives a half-precision teacher.
    """
    from diffusers import UNet2DModel

    o = options
    source = resolve_source(o.path, o.local_files_only)
    model_folder = find_model_folder(source, ("unet",), o.subfolder)
    class_name = read_config(source, model_folder).get("_class_name")
    if class_name not in (None, "UNet2DModel"):
        raise UserError(
            f"{source.where(model_folder)} holds a {class_name}, not a UNet2DModel: "
            "use the teacher family for that model (e.g. latent-sd, dit)"
        )
    scheduler_config = load_scheduler_config(source, model_folder, fill_defaults=True)
    unet = load_pretrained(UNet2DModel, source, model_folder, allow_pickle=o.allow_pickle, dtype=o.dtype)
    teacher = DDPMUNetTeacher(unet, scheduler_config, guidance_scale=o.guidance_scale)
    return teacher.to("cpu", parse_dtype(o.dtype))
