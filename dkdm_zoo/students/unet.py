"""`unet`: diffusers UNet2DModel (unconditional / class) or UNet2DConditionModel (text) students.

The students subclass the diffusers models (same modules, same state-dict keys), adding only the
student contract's forward. ``to_diffusers_unet()`` returns the plain diffusers model with the same
weights: save it as the ``unet`` of a ``DDPMPipeline`` folder and anyone can
``DDPMPipeline.from_pretrained(path)`` it (sampling with the pipeline is possible for unconditional
students; class-conditional ones need class labels, which DDPMPipeline does not pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers import UNet2DConditionModel, UNet2DModel
from torch import Tensor

from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET
from dkdm_zoo.registry.options import PositiveInt, UnitInterval, Widths
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import (
    broadcast_timesteps,
    check_conditioning,
    check_groups,
    check_square,
    fit_levels,
    labels_or_null,
    plain_copy,
    resolve_preset,
)

ARCH = "unet"


# block_out_channels are cut to the levels a resolution allows (see base.fit_levels).
# base follows the DKDM CIFAR-10 student: the IDDPM CIFAR UNet at 64 channels (~14M parameters).
@dataclass(frozen=True)
class UNetPreset:
    """A size of the UNet student; every field can be overridden (``--set student.FIELD=VALUE``)."""

    block_out_channels: Widths
    layers_per_block: PositiveInt
    attention_resolutions: tuple[PositiveInt, ...]  # feature-map sizes that get self-attention
    attention_head_dim: PositiveInt
    norm_num_groups: PositiveInt
    min_resolution: PositiveInt
    dropout: UnitInterval


PRESETS: dict[str, UNetPreset] = {
    "tiny": UNetPreset((16, 24, 24), 1, (), 8, 8, 4, 0.0),
    "small": UNetPreset((32, 64, 64, 64), 2, (16,), 32, 16, 4, 0.1),
    "base": UNetPreset((64, 128, 128, 128), 3, (16, 8), 32, 32, 4, 0.1),
}


class UNetStudent(UNet2DModel):
    """A diffusers UNet2DModel with the student contract's forward (plain tensor out)."""

    def forward(  # type: ignore[override]
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("this UNet student is not text-conditional: encoder_hidden_states must be None")
        t = broadcast_timesteps(timestep, sample.shape[0], sample.device)
        if self.config.num_class_embeds:
            class_labels = labels_or_null(
                class_labels, self.config.num_class_embeds - 1, sample.shape[0], sample.device
            )
        else:
            class_labels = None
        return super().forward(sample, t, class_labels=class_labels, return_dict=False)[0]

    def to_diffusers_unet(self) -> UNet2DModel:
        """A plain ``UNet2DModel`` with the same config and weights (for a ``DDPMPipeline`` folder)."""
        return plain_copy(self, UNet2DModel)


class UNetConditionStudent(UNet2DConditionModel):
    """A diffusers UNet2DConditionModel (cross-attention on text embeddings) with the contract's forward."""

    def forward(  # type: ignore[override]
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        if encoder_hidden_states is None:
            raise ValueError("this UNet student is text-conditional: pass encoder_hidden_states (B, L, D)")
        if class_labels is not None:
            raise ValueError("this UNet student is text-conditional: class_labels must be None")
        t = broadcast_timesteps(timestep, sample.shape[0], sample.device)
        return super().forward(sample, t, encoder_hidden_states, return_dict=False)[0]

    def to_diffusers_unet(self) -> UNet2DConditionModel:
        """A plain ``UNet2DConditionModel`` with the same config and weights (Stable Diffusion-style)."""
        return plain_copy(self, UNet2DConditionModel)


def build(
    spec: TeacherSpec, preset: str = DEFAULT_STUDENT_PRESET, **overrides: Any
) -> UNetStudent | UNetConditionStudent:
    """A UNet student fitting ``spec`` (see ``PRESETS``; any preset field can be overridden)."""
    cfg = resolve_preset(ARCH, PRESETS, preset, overrides)
    resolution = check_square(spec, ARCH)
    check_conditioning(spec, ARCH, text=True)
    widths = fit_levels(
        ARCH,
        resolution,
        tuple(cfg["block_out_channels"]),
        cfg["min_resolution"],
        explicit="block_out_channels" in overrides,
    )
    check_groups(ARCH, widths, cfg["norm_num_groups"])
    sizes = [resolution // 2**i for i in range(len(widths))]
    attn = [size in set(cfg["attention_resolutions"]) for size in sizes]
    common = {
        "sample_size": resolution,
        "in_channels": spec.channels,
        "out_channels": spec.out_channels,
        "block_out_channels": widths,
        "layers_per_block": cfg["layers_per_block"],
        "norm_num_groups": cfg["norm_num_groups"],
        "dropout": cfg["dropout"],
    }
    if spec.conditioning == "text":
        head_dim = cfg["attention_head_dim"]
        return UNetConditionStudent(
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            cross_attention_dim=spec.text_embed_dim,
            # UNet2DConditionModel's `attention_head_dim` is the number of heads (a diffusers legacy name)
            attention_head_dim=tuple(max(1, w // head_dim) for w in widths),
            **common,
        )
    return UNetStudent(
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=cfg["attention_head_dim"],
        num_class_embeds=(spec.num_classes + 1) if spec.conditioning == "class" else None,
        **common,
    )
