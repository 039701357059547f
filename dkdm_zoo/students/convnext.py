"""`convnext`: a U-shaped network of timm ConvNeXt blocks, conditioned by FiLM on time (and class).

Each level runs ``depth`` timm ``ConvNeXtBlock``s; after every block a zero-initialised linear map
of the conditioning vector (time embedding + class embedding) gives a per-channel scale and
shift. Downsampling is ConvNeXt's own (LayerNorm2d + 2x2 stride-2 conv); the decoder upsamples
(nearest + 3x3 conv), concatenates the encoder's skip and fuses it with a 1x1 conv.
Text conditioning is refused (no cross-attention): use the `unet` or `dit` student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXtBlock
from torch import Tensor, nn

from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET
from dkdm_zoo.registry.options import PositiveFloat, PositiveInt, Widths
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import (
    ConditionEmbedding,
    broadcast_timesteps,
    check_conditioning,
    check_square,
    fit_levels,
    resolve_preset,
)

ARCH = "convnext"


# widths are cut to the levels a resolution allows (see base.fit_levels)
@dataclass(frozen=True)
class ConvNeXtPreset:
    """A size of the ConvNeXt student; every field can be overridden (``--set student.FIELD=VALUE``)."""

    widths: Widths
    depth: PositiveInt
    mlp_ratio: PositiveFloat
    kernel_size: PositiveInt
    min_resolution: PositiveInt
    ls_init_value: PositiveFloat = 1e-6  # timm's layer-scale start: blocks begin near identity


PRESETS: dict[str, ConvNeXtPreset] = {
    "tiny": ConvNeXtPreset((16, 32, 32), depth=1, mlp_ratio=2.0, kernel_size=7, min_resolution=4),
    "small": ConvNeXtPreset((32, 64, 128, 128), depth=2, mlp_ratio=4.0, kernel_size=7, min_resolution=4),
    "base": ConvNeXtPreset((64, 128, 256, 256), depth=3, mlp_ratio=4.0, kernel_size=7, min_resolution=4),
}


class ConditionedStage(nn.Module):
    """``depth`` ConvNeXt blocks, each followed by a FiLM (scale, shift) from the conditioning vector."""

    def __init__(
        self,
        dim: int,
        depth: int,
        cond_dim: int,
        mlp_ratio: float,
        kernel_size: int,
        ls_init_value: float = 1e-6,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                ConvNeXtBlock(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio, ls_init_value=ls_init_value)
                for _ in range(depth)
            ]
        )
        self.films = nn.ModuleList(
            [nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim)) for _ in range(depth)]
        )
        for film in self.films:  # start as the unconditioned block: scale 1, shift 0
            nn.init.zeros_(film[-1].weight)
            nn.init.zeros_(film[-1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        for block, film in zip(self.blocks, self.films, strict=True):
            scale, shift = film(c)[:, :, None, None].chunk(2, dim=1)
            x = block(x) * (1 + scale) + shift
        return x


class ConvNeXtStudent(ModelMixin, ConfigMixin):
    """ConvNeXt U-Net: stem, encoder levels, middle stage, decoder levels with skips, head."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 128),
        depth: int = 2,
        mlp_ratio: float = 4.0,
        kernel_size: int = 7,
        num_classes: int | None = None,
        ls_init_value: float = 1e-6,
    ):
        super().__init__()
        widths = tuple(widths)
        cond_dim = 4 * widths[0]
        pairs = list(zip(widths[:-1], widths[1:], strict=True))  # (level width, next level width)

        def stage(dim: int) -> ConditionedStage:
            return ConditionedStage(dim, depth, cond_dim, mlp_ratio, kernel_size, ls_init_value)

        self.cond_embedder = ConditionEmbedding(cond_dim, num_classes, freq_dim=max(32, widths[0]))
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down_stages = nn.ModuleList([stage(w) for w in widths])
        self.downsamples = nn.ModuleList(
            [nn.Sequential(LayerNorm2d(a), nn.Conv2d(a, b, 2, stride=2)) for a, b in pairs]
        )
        self.mid = stage(widths[-1])
        self.upsamples = nn.ModuleList(
            [
                nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(b, a, 3, padding=1))
                for a, b in pairs
            ]
        )
        self.fuse = nn.ModuleList([nn.Conv2d(2 * w, w, 1) for w in widths])
        self.up_stages = nn.ModuleList([stage(w) for w in widths])
        self.head = nn.Sequential(
            LayerNorm2d(widths[0]), nn.GELU(), nn.Conv2d(widths[0], out_channels, 3, padding=1)
        )

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(
                "the ConvNeXt student is not text-conditional: encoder_hidden_states must be None"
            )
        if class_labels is not None and not self.config.num_classes:
            raise ValueError("this ConvNeXt student is not class-conditional: class_labels must be None")
        c = self.cond_embedder(broadcast_timesteps(timestep, sample.shape[0], sample.device), class_labels)
        x = self.stem(sample)
        skips: list[Tensor] = []
        for level, stage in enumerate(self.down_stages):
            x = stage(x, c)
            skips.append(x)
            if level < len(self.downsamples):
                x = self.downsamples[level](x)
        x = self.mid(x, c)
        for level in reversed(range(len(self.up_stages))):
            if level < len(self.upsamples):
                x = self.upsamples[level](x)
            x = self.up_stages[level](self.fuse[level](torch.cat([x, skips[level]], dim=1)), c)
        return self.head(x)


def build(spec: TeacherSpec, preset: str = DEFAULT_STUDENT_PRESET, **overrides: Any) -> ConvNeXtStudent:
    """A ConvNeXt U-Net student fitting ``spec`` (see ``PRESETS``; any preset field can be overridden)."""
    cfg = resolve_preset(ARCH, PRESETS, preset, overrides)
    resolution = check_square(spec, ARCH)
    check_conditioning(spec, ARCH, text=False)
    widths = fit_levels(
        ARCH, resolution, tuple(cfg.pop("widths")), cfg.pop("min_resolution"), explicit="widths" in overrides
    )
    return ConvNeXtStudent(
        sample_size=resolution,
        in_channels=spec.channels,
        out_channels=spec.out_channels,
        widths=widths,
        num_classes=spec.num_classes if spec.conditioning == "class" else None,
        **cfg,
    )
