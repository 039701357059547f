"""The configs of four public flow-matching repositories, at full size and narrow.

"narrow" keeps every key, class, latent channel count, scaling/shift factor and scheduler value and
shrinks only widths, depths and vocabularies. Values follow the public repos as diffusers' own
conversion scripts and pipelines define them, cross-checked in public code (code search; no hub
access here): SD3.5-medium (MMDiT-X: 24 layers x 24 heads x 64, dual attention in layers 0-12,
rms q/k norm, pos_embed_max_size 384, VAE scaling 1.5305 / shift 0.0609 without quant convs, CLIP-L
768 + CLIP-G 1280 pooled = 2048, T5-XXL 4096; FlowMatchEuler shift 3.0); FLUX.1 (19 double + 38
single blocks, 24 heads x 128, RoPE axes (16, 56, 56), in_channels 64 = 16 x 2 x 2, CLIP-L pooled
768, T5-XXL 4096; VAE scaling 0.3611 / shift 0.1159; schnell: shift 1.0, no guidance embedding;
dev: guidance embedding and dynamic shift 0.5..1.15 over 256..4096 tokens); SANA 1600M 1024px
(20 layers, 70 heads x 32 = 2240 wide, 20 cross heads x 112, mlp 2.5, patch 1, 32 latent channels,
Gemma-2-2B 2304-d states; DC-AE f32c32 scaling 0.41407; DPMSolverMultistep with flow_prediction,
use_flow_sigmas, flow_shift 3.0).
"""

from __future__ import annotations

from typing import Any, Literal

Size = Literal["narrow", "full"]

SD35_MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
FLUX_SCHNELL = "black-forest-labs/FLUX.1-schnell"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
SANA_1600M = "Efficient-Large-Model/Sana_1600M_1024px_diffusers"


def _n(size: Size, narrow: Any, full: Any) -> Any:
    return narrow if size == "narrow" else full


# --- text encoders (transformers config fields) ---------------------------------------------------


def clip_l(size: Size, vocab_size: int) -> dict[str, Any]:
    """openai/clip-vit-large-patch14's text tower (SD3's text_encoder, FLUX's text_encoder)."""
    return {
        "hidden_size": _n(size, 16, 768),
        "intermediate_size": _n(size, 32, 3072),
        "num_hidden_layers": _n(size, 2, 12),
        "num_attention_heads": _n(size, 2, 12),
        "projection_dim": _n(size, 16, 768),
        "hidden_act": "quick_gelu",
        "max_position_embeddings": 77,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "vocab_size": _n(size, vocab_size, 49408),
    }


def clip_g(size: Size, vocab_size: int) -> dict[str, Any]:
    """laion CLIP-ViT-bigG-14's text tower (SD3's text_encoder_2)."""
    return {
        **clip_l(size, vocab_size),
        "hidden_size": _n(size, 16, 1280),
        "intermediate_size": _n(size, 32, 5120),
        "num_hidden_layers": _n(size, 2, 32),
        "num_attention_heads": _n(size, 2, 20),
        "projection_dim": _n(size, 16, 1280),
        "hidden_act": "gelu",
    }


def t5_xxl(size: Size, vocab_size: int) -> dict[str, Any]:
    """google/t5-v1_1-xxl's encoder (SD3's text_encoder_3, FLUX's text_encoder_2)."""
    return {
        "d_model": _n(size, 32, 4096),
        "d_ff": _n(size, 64, 10240),
        "d_kv": _n(size, 8, 64),
        "num_heads": _n(size, 4, 64),
        "num_layers": _n(size, 2, 24),
        "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.1,
        "tie_word_embeddings": False,
        "is_encoder_decoder": True,
        "decoder_start_token_id": 0,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "vocab_size": _n(size, vocab_size, 32128),
    }


def gemma2_2b(size: Size, vocab_size: int) -> dict[str, Any]:
    """google/gemma-2-2b-it (SANA's text_encoder, a Gemma2Model)."""
    return {
        "hidden_size": _n(size, 32, 2304),
        "intermediate_size": _n(size, 64, 9216),
        "num_hidden_layers": _n(size, 2, 26),
        "num_attention_heads": _n(size, 2, 8),
        "num_key_value_heads": _n(size, 1, 4),
        "head_dim": _n(size, 16, 256),
        "query_pre_attn_scalar": _n(size, 16, 256),
        "hidden_activation": "gelu_pytorch_tanh",
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "vocab_size": _n(size, vocab_size, 256000),
    }


# --- VAEs ------------------------------------------------------------------------------------------


def kl_vae_16(size: Size, *, scaling_factor: float, shift_factor: float) -> dict[str, Any]:
    """SD3's / FLUX's AutoencoderKL: 8x downsampling, 16 latent channels, no quant convs."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": _n(size, [8, 8, 16, 16], [128, 256, 512, 512]),
        "layers_per_block": _n(size, 1, 2),
        "act_fn": "silu",
        "latent_channels": 16,
        "norm_num_groups": _n(size, 8, 32),
        "sample_size": _n(size, 64, 1024),
        "scaling_factor": scaling_factor,
        "shift_factor": shift_factor,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "force_upcast": True,
        "mid_block_add_attention": True,
    }


def dc_ae_f32c32(size: Size) -> dict[str, Any]:
    """mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers: AutoencoderDC, 32x, 32 latent channels."""
    blocks = ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3
    return {
        "in_channels": 3,
        "latent_channels": 32,
        "attention_head_dim": _n(size, 8, 32),
        "encoder_block_types": blocks,
        "decoder_block_types": blocks,
        "encoder_block_out_channels": _n(size, [8, 8, 8, 16, 32, 32], [128, 256, 512, 512, 1024, 1024]),
        "decoder_block_out_channels": _n(size, [8, 8, 8, 16, 32, 32], [128, 256, 512, 512, 1024, 1024]),
        "encoder_layers_per_block": _n(size, [1] * 6, [2, 2, 2, 3, 3, 3]),
        "decoder_layers_per_block": _n(size, [1] * 6, [3, 3, 3, 3, 3, 3]),
        "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
        "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
        "upsample_block_type": "interpolate",
        "downsample_block_type": "Conv",
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
        "scaling_factor": 0.41407,
    }


# --- denoisers and schedulers ----------------------------------------------------------------------


def sd35_medium_transformer(size: Size) -> dict[str, Any]:
    return {
        "sample_size": _n(size, 8, 128),
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": _n(size, 2, 24),
        "attention_head_dim": _n(size, 8, 64),
        "num_attention_heads": _n(size, 2, 24),
        "joint_attention_dim": _n(size, 32, 4096),
        "caption_projection_dim": _n(size, 16, 1536),
        "pooled_projection_dim": _n(size, 32, 2048),
        "pos_embed_max_size": _n(size, 16, 384),
        "dual_attention_layers": _n(size, [0], list(range(13))),
        "qk_norm": "rms_norm",
    }


SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}


def flux_transformer(size: Size, *, guidance_embeds: bool) -> dict[str, Any]:
    return {
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": _n(size, 1, 19),
        "num_single_layers": _n(size, 1, 38),
        "attention_head_dim": _n(size, 16, 128),
        "num_attention_heads": _n(size, 2, 24),
        "joint_attention_dim": _n(size, 32, 4096),
        "pooled_projection_dim": _n(size, 16, 768),
        "guidance_embeds": guidance_embeds,
        "axes_dims_rope": _n(size, [4, 6, 6], [16, 56, 56]),
    }


FLUX_SCHNELL_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}
FLUX_DEV_SCHEDULER = {**FLUX_SCHNELL_SCHEDULER, "shift": 3.0, "use_dynamic_shifting": True}


def sana_transformer(size: Size) -> dict[str, Any]:
    return {
        "in_channels": 32,
        "out_channels": 32,
        "num_attention_heads": _n(size, 2, 70),
        "attention_head_dim": _n(size, 8, 32),
        "num_layers": _n(size, 2, 20),
        "num_cross_attention_heads": _n(size, 2, 20),
        "cross_attention_head_dim": _n(size, 8, 112),
        "cross_attention_dim": _n(size, 16, 2240),
        "caption_channels": _n(size, 32, 2304),
        "mlp_ratio": 2.5,
        "dropout": 0.0,
        "attention_bias": False,
        "sample_size": _n(size, 8, 32),
        "patch_size": 1,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "interpolation_scale": None,
    }


SANA_SCHEDULER = {
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "dynamic_thresholding_ratio": 0.995,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
    "use_lu_lambdas": False,
    "variance_type": None,
}
