"""The JSON files of stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0 and
PixArt-alpha/PixArt-XL-2-1024-MS / PixArt-Sigma-XL-2-1024-MS, at full size and narrow.

As in ``hub_configs``: full size keeps the public repositories' values and keys; "narrow" keeps
every key, block count, latent channel count, scaling factor and scheduler value, and shrinks only
widths, depths and sample sizes. Sources (code search over public repositories, no hub access):
SD 2.x's unet config (attention_head_dim [5, 10, 20, 20], use_linear_projection, 1024-d text,
sample_size 96) as reproduced in public model-zoo code ("stable-diffusion-2/blob/main/unet/config.json");
SDXL's unet values as diffusers' single-file conversion code lists them (text_time, 256 x 6 + 1280 =
2816, transformer_layers_per_block [1, 2, 10], cross_attention_dim 2048); PixArt's transformer
(ada_norm_single, 28 x 1152, caption_channels 4096, Σ's interpolation_scale 2 and
use_additional_conditions false) as in diffusers' PixArt tests and public Σ-derived configs.
"""

from __future__ import annotations

from typing import Any

from dkdm_zoo.testing.hub_configs import Size, autoencoder_kl

SD2_VERSION = "0.10.0.dev0"
SDXL_VERSION = "0.19.0.dev0"
PIXART_ALPHA_VERSION = "0.22.0.dev0"
PIXART_SIGMA_VERSION = "0.28.0.dev0"

# --- stabilityai/stable-diffusion-2-1 (768-v) -------------------------------------------------------

SD2_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": SD2_VERSION,
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD2_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def sd2_unet(size: Size) -> dict[str, Any]:
    narrow = size == "narrow"
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.8.0",
        "act_fn": "silu",
        "attention_head_dim": [2, 2, 4, 4] if narrow else [5, 10, 20, 20],
        "block_out_channels": [16, 16, 32, 32] if narrow else [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 32 if narrow else 1024,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,  # the real block count: BK presets remove one
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8 if narrow else 32,
        "out_channels": 4,
        "sample_size": 8 if narrow else 96,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "use_linear_projection": True,
    }


def open_clip_text(
    size: Size,
    vocab_size: int,
    *,
    hidden: int,
    layers: int,
    heads: int,
    projection: int,
    architecture: str,
    version: str,
) -> dict[str, Any]:
    """An OpenCLIP text tower saved as a transformers CLIP text model (gelu, bos/eos 0/2, pad 1)."""
    narrow = size == "narrow"
    return {
        "architectures": [architecture],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4 * hidden,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "projection_dim": projection,
        "torch_dtype": "float32",
        "transformers_version": version,
        "vocab_size": vocab_size if narrow else 49408,
    }


def sd2_text_encoder(size: Size, vocab_size: int) -> dict[str, Any]:
    """OpenCLIP ViT-H/14's text tower (23 of 24 layers, 1024 wide) as SD 2.x ships it: CLIPTextModel."""
    narrow = size == "narrow"
    return open_clip_text(
        size,
        vocab_size,
        hidden=32 if narrow else 1024,
        layers=2 if narrow else 23,
        heads=4 if narrow else 16,
        projection=512,
        architecture="CLIPTextModel",
        version="4.25.0.dev0",
    )


# --- stabilityai/stable-diffusion-xl-base-1.0 --------------------------------------------------------

SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": SDXL_VERSION,
    "force_zeros_for_empty_prompt": True,
    "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": SDXL_VERSION,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def sdxl_unet(size: Size) -> dict[str, Any]:
    narrow = size == "narrow"
    pooled = 32 if narrow else 1280  # text_encoder_2's projection_dim
    time_dim = 8 if narrow else 256
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": SDXL_VERSION,
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": time_dim,
        "attention_head_dim": [2, 2, 4] if narrow else [5, 10, 20],
        "block_out_channels": [16, 16, 32] if narrow else [320, 640, 1280],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": 48 if narrow else 2048,  # CLIP-L + OpenCLIP-bigG widths
        "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,  # the real block count: BK presets remove one
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 8 if narrow else 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 6 * time_dim + pooled,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "sample_size": 8 if narrow else 128,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": [1, 1, 2] if narrow else [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": None,
        "use_linear_projection": True,
    }


def sdxl_vae(size: Size) -> dict[str, Any]:
    """SDXL's AutoencoderKL: SD's architecture, scaling factor 0.13025, force_upcast (fp16 overflows)."""
    vae = autoencoder_kl(size, version="0.20.0.dev0", sample_size=64 if size == "narrow" else 1024)
    return {**vae, "force_upcast": True, "scaling_factor": 0.13025}


def sdxl_text_encoder(size: Size, vocab_size: int) -> dict[str, Any]:
    """CLIP ViT-L/14's text tower (quick_gelu, 768 x 12)."""
    narrow = size == "narrow"
    config = open_clip_text(
        size,
        vocab_size,
        hidden=16 if narrow else 768,
        layers=2 if narrow else 12,
        heads=2 if narrow else 12,
        projection=768,
        architecture="CLIPTextModel",
        version="4.32.0.dev0",
    )
    return {**config, "hidden_act": "quick_gelu", "_name_or_path": "openai/clip-vit-large-patch14"}


def sdxl_text_encoder_2(size: Size, vocab_size: int) -> dict[str, Any]:
    """OpenCLIP ViT-bigG/14's text tower with its projection (1280 x 32, pooled projection 1280)."""
    narrow = size == "narrow"
    return open_clip_text(
        size,
        vocab_size,
        hidden=32 if narrow else 1280,
        layers=2 if narrow else 32,
        heads=4 if narrow else 20,
        projection=32 if narrow else 1280,
        architecture="CLIPTextModelWithProjection",
        version="4.32.0.dev0",
    )


# --- PixArt-alpha/PixArt-XL-2-1024-MS (α) and PixArt-Sigma-XL-2-1024-MS (Σ) ------------------------


def pixart_index(sigma: bool) -> dict[str, Any]:
    return {
        "_class_name": "PixArtSigmaPipeline" if sigma else "PixArtAlphaPipeline",
        "_diffusers_version": PIXART_SIGMA_VERSION if sigma else PIXART_ALPHA_VERSION,
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


PIXART_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "_diffusers_version": PIXART_ALPHA_VERSION,
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "dynamic_thresholding_ratio": 0.995,
    "euler_at_final": False,
    "lambda_min_clipped": float("-inf"),
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_karras_sigmas": False,
    "use_lu_lambdas": False,
    "variance_type": None,
}


def pixart_transformer(size: Size, sigma: bool) -> dict[str, Any]:
    narrow = size == "narrow"
    config = {
        "_class_name": "Transformer2DModel",
        "_diffusers_version": PIXART_SIGMA_VERSION if sigma else PIXART_ALPHA_VERSION,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "attention_head_dim": 12 if narrow else 72,
        "attention_type": "default",
        "caption_channels": 32 if narrow else 4096,
        "cross_attention_dim": 24 if narrow else 1152,  # = heads x head width
        "double_self_attention": False,
        "dropout": 0.0,
        "in_channels": 4,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "norm_type": "ada_norm_single",
        "num_attention_heads": 2 if narrow else 16,
        "num_embeds_ada_norm": 1000,
        "num_layers": 2 if narrow else 28,
        "num_vector_embeds": None,
        "only_cross_attention": False,
        "out_channels": 8,
        "patch_size": 2,
        "sample_size": 8 if narrow else 128,
        "upcast_attention": False,
        "use_linear_projection": False,
    }
    if sigma:
        config.update(interpolation_scale=2, use_additional_conditions=False)
    elif narrow:  # α's file leaves it out (sample_size 128 turns the resolution / aspect-ratio
        # micro-conditions on); the narrow copy's sample_size 8 would turn them off, so it says so
        config["use_additional_conditions"] = True
    return config


def pixart_text_encoder(size: Size, vocab_size: int) -> dict[str, Any]:
    """T5 v1.1 XXL's encoder (4096-d, 24 layers, gated gelu) as T5EncoderModel saves it."""
    narrow = size == "narrow"
    return {
        "architectures": ["T5EncoderModel"],
        "d_ff": 37 if narrow else 10240,
        "d_kv": 8 if narrow else 64,
        "d_model": 32 if narrow else 4096,
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "num_decoder_layers": 2 if narrow else 24,
        "num_heads": 4 if narrow else 64,
        "num_layers": 2 if narrow else 24,
        "output_past": True,
        "pad_token_id": 0,
        "relative_attention_max_distance": 128,
        "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.33.1",
        "use_cache": True,
        "vocab_size": vocab_size if narrow else 32128,
    }


#: the pipeline's max_sequence_length: PixArtAlphaPipeline 120 tokens, PixArtSigmaPipeline 300
PIXART_MAX_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
