"""`dit`: a diffusers DiTTransformer2DModel teacher, in latent space (with its VAE) or pixel space.

Classifier-free guidance uses the base Teacher's rule: eps is guided on every latent channel and
the learned-variance channels come from the conditional branch (used by DDPM steps). The original
DiT code (``forward_with_cfg``) guides only the first 3 output channels, a quirk; diffusers'
DiTPipeline guides all latent channels but then drops the learned variance. We copy neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.sampling.latents import decode_latents
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Condition, PipelineComponents, Teacher
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


def vae_downsampling(vae: nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def spec_from_dit(
    transformer: nn.Module,
    scheduler_config: dict[str, Any],
    vae: nn.Module | None = None,
    *,
    family: str = "dit",
) -> TeacherSpec:
    cfg = transformer.config
    channels, size = cfg.in_channels, cfg.sample_size
    out_channels = cfg.out_channels or channels
    if cfg.num_embeds_ada_norm is None:
        raise UserError(
            f"{family}: this DiT has no class embedding (num_embeds_ada_norm); only class-conditional DiTs are supported"
        )
    image_shape = None
    if vae is not None:
        factor = vae_downsampling(vae)
        image_shape = (vae.config.out_channels, size * factor, size * factor)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="latent" if vae is not None else "pixel",
        **schedule_spec_fields(
            scheduler_config, learned=out_channels == 2 * channels, where=family, built_as="DDPMScheduler"
        ),
        conditioning="class",
        num_classes=int(cfg.num_embeds_ada_norm),  # label num_classes is DiT's null (CFG) embedding
        image_shape=image_shape,
        family=family,
    )


class DiTTeacher(Teacher):
    """DiTTransformer2DModel (class-conditional, learned sigma) with an optional AutoencoderKL."""

    student_calling = "diffusers"  # its network takes the student contract's keywords as they are

    def __init__(
        self,
        transformer: nn.Module,
        scheduler_config: dict[str, Any],
        vae: nn.Module | None = None,
        *,
        guidance_scale: float | None = 4.0,
    ):
        super().__init__(
            spec_from_dit(transformer, dict(scheduler_config), vae), guidance_scale=guidance_scale
        )
        self.transformer = transformer
        self.vae = vae
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.transformer] + ([self.vae] if self.vae is not None else [])

    def denoiser(self) -> nn.Module:
        return self.transformer

    def with_denoiser(self, module: nn.Module) -> DiTTeacher:
        return self._view(transformer=module)

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        labels = cond.labels if cond is not None else None
        if labels is None:  # DiT always takes a label: unconditional means the null label
            labels = torch.full((x_t.shape[0],), self.spec.num_classes, dtype=torch.long, device=x_t.device)
        return self.transformer(x_t, timestep=t.to(x_t.device), class_labels=labels.to(x_t.device)).sample

    @torch.no_grad()
    def decode(self, samples: Tensor) -> Tensor:
        """Latents -> images in [-1, 1], as DiTPipeline decodes (before its [0, 1] rescale)."""
        if self.vae is None:
            return samples
        return decode_latents(self.vae, samples, dtype=self.dtype)

    def pipeline_components(self) -> PipelineComponents:
        return PipelineComponents(vae=self.vae)


@dataclass(frozen=True)
class DiTOptions(HubTeacherOptions):
    guidance_scale: float | None = 4.0  # DiTPipeline's default


@takes_options(DiTOptions)
def load(options: DiTOptions) -> DiTTeacher:
    """A DiT teacher from a DiTPipeline folder (transformer/, vae/, scheduler/), hub id or cached snapshot.

    Repositories saved by diffusers 0.12 (facebook/DiT-XL-2-*) name the transformer
    ``Transformer2DModel``; it loads as today's ``DiTTransformer2DModel``. Without a vae/ folder
    (or from a bare transformer model folder) the DiT runs in pixel space.
    """
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    o = options
    source = resolve_source(o.path, o.local_files_only)
    folder = find_model_folder(source, ("transformer",))
    config = read_config(source, folder)
    class_name = config.get("_class_name")
    where = source.where(folder)
    if class_name not in (None, "DiTTransformer2DModel", "Transformer2DModel"):
        raise UserError(
            f"{where} holds a {class_name}, not a DiTTransformer2DModel: use its own teacher family"
        )
    if class_name == "Transformer2DModel" and config.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise UserError(
            f"{where} holds a Transformer2DModel with norm_type {config.get('norm_type')!r}, not a DiT "
            "(ada_norm_zero): use its own teacher family"
        )
    scheduler_config = load_scheduler_config(source, folder)
    weights = {"allow_pickle": o.allow_pickle, "dtype": o.dtype}
    transformer = load_pretrained(DiTTransformer2DModel, source, folder, **weights)
    vae = None
    if folder is not None and source.fetch("config.json", "vae") is not None:
        vae = load_pretrained(AutoencoderKL, source, "vae", **weights)
    teacher = DiTTeacher(transformer, scheduler_config, vae, guidance_scale=o.guidance_scale)
    return teacher.to("cpu", parse_dtype(o.dtype))
