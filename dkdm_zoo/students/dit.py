"""`dit`: a Diffusion Transformer (Peebles & Xie 2023) student on timm blocks, with adaLN-Zero.

Unlike diffusers' DiTTransformer2DModel it has a true unconditional mode (no class table at all),
a class-conditional mode with a null label (num_classes + 1 rows, for classifier-free guidance)
and a text mode: a cross-attention layer per block (diffusers ``Attention``) on the teacher's
encoder hidden states, plus their mean pooled into the adaLN conditioning vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention as CrossAttention
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from timm.layers import Attention, Mlp, PatchEmbed
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET
from dkdm_zoo.registry.options import NonNegativeInt, PositiveFloat, PositiveInt
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import (
    ConditionEmbedding,
    broadcast_timesteps,
    check_conditioning,
    check_heads,
    fit_patch,
    resolve_preset,
)

ARCH = "dit"


@dataclass(frozen=True)
class DiTPreset:
    """A size of the DiT student; every field can be overridden (``--set student.FIELD=VALUE``)."""

    patch_size: PositiveInt
    hidden_size: PositiveInt
    depth: PositiveInt
    num_heads: PositiveInt
    mlp_ratio: PositiveFloat
    # patch_size shrinks until the token grid has at least min_grid patches a side (base.fit_patch):
    # 8x8 digits get 1x1 patches (64 tokens; 2x2 left 16 and trained to a far worse FD), 32x32 keep 2x2
    min_grid: PositiveInt = 8
    # extra pixels each patch embedding sees on every side (a (patch + 2 overlap)^2 kernel at the
    # patch stride): with 1x1 patches of a 1-channel image a token would otherwise hold one scalar
    overlap: NonNegativeInt = 0


PRESETS: dict[str, DiTPreset] = {
    # tiny/small: overlapping patch embedding, measured with DKDM on digits-ddpm (300 steps, 1x1 patches:
    # FD 20.3 against 31.1); base keeps the paper's non-overlapping patches (unmeasured at that size)
    "tiny": DiTPreset(patch_size=2, hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0, overlap=1),
    "small": DiTPreset(patch_size=2, hidden_size=192, depth=6, num_heads=3, mlp_ratio=4.0, overlap=1),
    "base": DiTPreset(patch_size=2, hidden_size=256, depth=12, num_heads=4, mlp_ratio=4.0),
}

_GELU_TANH = partial(nn.GELU, approximate="tanh")


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Self-attention + MLP modulated by the conditioning vector (adaLN-Zero), optional cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=_GELU_TANH)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.cross_norm = nn.LayerNorm(dim, eps=1e-6) if context_dim else None
        self.cross_attn = (
            CrossAttention(
                dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, bias=True
            )
            if context_dim
            else None
        )

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[
            :, None
        ].chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), encoder_hidden_states=context)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class DiTStudent(ModelMixin, ConfigMixin):
    """DiT with patch embedding (timm), fixed 2D sin-cos positions, adaLN-Zero blocks and a linear decoder."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int = 2,
        hidden_size: int = 192,
        depth: int = 8,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int | None = None,
        cross_attention_dim: int | None = None,
        overlap: int = 0,  # 0 here (not the presets' 1): configs saved before the option rebuild as trained
    ):
        super().__init__()
        grid = sample_size // patch_size
        self.x_embedder = PatchEmbed(sample_size, patch_size, in_channels, hidden_size, bias=True)
        if overlap:  # same grid, wider receptive field per token
            kernel = patch_size + 2 * overlap
            self.x_embedder.proj = nn.Conv2d(in_channels, hidden_size, kernel, patch_size, padding=overlap)
        # fixed positions, recomputed on load (not saved): identical on every rebuild
        pos = get_2d_sincos_pos_embed(hidden_size, grid, base_size=grid, output_type="pt").float()
        self.register_buffer("pos_embed", pos[None], persistent=False)
        self.cond_embedder = ConditionEmbedding(hidden_size, num_classes, cross_attention_dim)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio, cross_attention_dim) for _ in range(depth)]
        )
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.adaLN_final = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's init: xavier linears, zeroed adaLN modulations and output layer (blocks start as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for linear in (self.cond_embedder.time_embed.linear_1, self.cond_embedder.time_embed.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        if self.cond_embedder.class_embed is not None:
            nn.init.normal_(self.cond_embedder.class_embed.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.adaLN_final[-1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        cfg = self.config
        if encoder_hidden_states is not None and cfg.cross_attention_dim is None:
            raise ValueError("this DiT student is not text-conditional: encoder_hidden_states must be None")
        if class_labels is not None and not cfg.num_classes:
            raise ValueError("this DiT student is not class-conditional: class_labels must be None")
        t = broadcast_timesteps(timestep, sample.shape[0], sample.device)
        c = self.cond_embedder(t, class_labels, encoder_hidden_states)
        x = self.x_embedder(sample) + self.pos_embed.to(sample.dtype)
        for block in self.blocks:
            x = block(x, c, encoder_hidden_states)
        shift, scale = self.adaLN_final(c)[:, None].chunk(2, dim=-1)
        x = self.proj_out(modulate(self.norm_final(x), shift, scale))
        p, grid = cfg.patch_size, cfg.sample_size // cfg.patch_size
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=grid, w=grid, p=p, q=p)


def build(spec: TeacherSpec, preset: str = DEFAULT_STUDENT_PRESET, **overrides: Any) -> DiTStudent:
    """A DiT student fitting ``spec`` (see ``PRESETS``; any preset field can be overridden)."""
    cfg = resolve_preset(ARCH, PRESETS, preset, overrides)
    check_conditioning(spec, ARCH, text=True)
    min_grid = cfg.pop("min_grid")
    cfg["patch_size"] = fit_patch(ARCH, spec, cfg["patch_size"], min_grid, explicit="patch_size" in overrides)
    check_heads(ARCH, cfg["hidden_size"], cfg["num_heads"])
    if cfg["hidden_size"] % 4:
        raise UserError(
            f"student 'dit': hidden_size={cfg['hidden_size']} must be a multiple of 4 (2D sin-cos positions)"
        )
    return DiTStudent(
        sample_size=spec.resolution,
        in_channels=spec.channels,
        out_channels=spec.out_channels,
        num_classes=spec.num_classes if spec.conditioning == "class" else None,
        cross_attention_dim=spec.text_embed_dim if spec.conditioning == "text" else None,
        **cfg,
    )
