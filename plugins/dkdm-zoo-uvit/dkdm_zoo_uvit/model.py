"""U-ViT (Bao et al., "All are Worth Words", CVPR 2023) as a dkdm-zoo student.

Everything is a token: the timestep, the class label (with a null label for classifier-free
guidance), the teacher's text embeddings and the image patches. ``depth // 2`` shallow blocks
hand their outputs to the matching deep blocks through long skip connections (concatenate, then
a linear map back to the width); a 3x3 conv smooths the unpatchified output, as in the paper.
Blocks are timm's ViT ``Block``; patch embedding is timm's ``PatchEmbed``; reshapes are einops.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from dkdm_zoo.toolkit import (
    IncompatibleError,
    TeacherSpec,
    UserError,
    broadcast_timesteps,
    check_heads,
    fit_patch,
    labels_or_null,
    resolve_preset,
)

ARCH = "uvit"

# patch_size shrinks until the token grid is at least min_grid per side (toolkit.fit_patch):
# 8x8 digits get 1x1 patches (64 tokens instead of 16), 32x32 keep 2x2.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"patch_size": 2, "hidden_size": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "min_grid": 8},
    "small": {
        "patch_size": 2,
        "hidden_size": 192,
        "depth": 9,
        "num_heads": 3,
        "mlp_ratio": 4.0,
        "min_grid": 8,
    },
    "base": {
        "patch_size": 2,
        "hidden_size": 320,
        "depth": 11,
        "num_heads": 5,
        "mlp_ratio": 4.0,
        "min_grid": 8,
    },
}


class SkipBlock(nn.Module):
    """A deep block fed by a long skip from its shallow twin: linear(concat(x, skip)) -> ViT block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim)
        self.block = Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=False)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.block(self.skip_linear(torch.cat([x, skip], dim=-1)))


class UViTStudent(ModelMixin, ConfigMixin):
    """U-ViT: [time, label?, text tokens?, patches] -> shallow blocks -> mid -> deep blocks with skips."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int = 2,
        hidden_size: int = 192,
        depth: int = 9,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int | None = None,
        context_dim: int | None = None,
        context_len: int | None = None,
    ):
        super().__init__()
        self.patch_embed = PatchEmbed(sample_size, patch_size, in_channels, hidden_size, bias=True)
        self.time_proj = Timesteps(hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(hidden_size, hidden_size)
        self.label_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes else None
        self.context_embed = nn.Linear(context_dim, hidden_size) if context_dim else None
        self.extras = 1 + (1 if num_classes else 0) + (context_len if context_dim else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.patch_embed.num_patches, hidden_size))
        self.in_blocks = nn.ModuleList(
            [Block(hidden_size, num_heads, mlp_ratio=mlp_ratio, qkv_bias=False) for _ in range(depth // 2)]
        )
        self.mid_block = Block(hidden_size, num_heads, mlp_ratio=mlp_ratio, qkv_bias=False)
        self.out_blocks = nn.ModuleList(
            [SkipBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth // 2)]
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder_pred = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.final_layer = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)
        # the smoothing conv starts as the identity: at PyTorch's default init it scrambles every
        # output pixel with its neighbours and training sat at the loss of predicting zero for
        # hundreds of steps (DKDM on 8x8 digits), since the decoder had to learn to undo it first
        nn.init.dirac_(self.final_layer.weight)
        nn.init.zeros_(self.final_layer.bias)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        cfg = self.config
        batch = sample.shape[0]
        t = broadcast_timesteps(timestep, batch, sample.device)
        tokens = [self.time_embed(self.time_proj(t).to(sample.dtype))[:, None]]
        if self.label_embed is not None:
            tokens.append(
                self.label_embed(labels_or_null(class_labels, cfg.num_classes, batch, sample.device))[:, None]
            )
        elif class_labels is not None:
            raise ValueError("this U-ViT student is not class-conditional: class_labels must be None")
        if self.context_embed is not None:
            if encoder_hidden_states is None or encoder_hidden_states.shape[1] != cfg.context_len:
                raise ValueError(
                    f"this U-ViT student needs encoder_hidden_states of shape (B, {cfg.context_len}, D)"
                )
            tokens.append(self.context_embed(encoder_hidden_states))
        elif encoder_hidden_states is not None:
            raise ValueError("this U-ViT student is not text-conditional: encoder_hidden_states must be None")
        x = torch.cat([*tokens, self.patch_embed(sample)], dim=1) + self.pos_embed
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, self.extras :]
        p, grid = cfg.patch_size, cfg.sample_size // cfg.patch_size
        x = rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=grid, w=grid, p=p, q=p)
        return self.final_layer(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build(spec: TeacherSpec, preset: str = "small", **overrides: Any) -> UViTStudent:
    """A U-ViT student fitting ``spec`` (presets in ``PRESETS``; any preset field can be overridden)."""
    cfg = resolve_preset(ARCH, PRESETS, preset, overrides)
    min_grid = cfg.pop("min_grid")
    cfg["patch_size"] = fit_patch(ARCH, spec, cfg["patch_size"], min_grid, explicit="patch_size" in overrides)
    check_heads(ARCH, cfg["hidden_size"], cfg["num_heads"])
    if cfg["depth"] % 2 == 0:
        raise UserError(
            f"student '{ARCH}': depth={cfg['depth']} must be odd (shallow blocks, one mid block, deep blocks)"
        )
    if spec.conditioning == "text" and not spec.text_seq_len:
        raise IncompatibleError(
            f"student '{ARCH}' needs a fixed text sequence length (text tokens have positions)"
        )
    text = spec.conditioning == "text"
    return UViTStudent(
        sample_size=spec.resolution,
        in_channels=spec.channels,
        out_channels=spec.out_channels,
        num_classes=spec.num_classes if spec.conditioning == "class" else None,
        context_dim=spec.text_embed_dim if text else None,
        context_len=spec.text_seq_len if text else None,
        **cfg,
    )
