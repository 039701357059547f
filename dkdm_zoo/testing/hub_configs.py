"""The JSON files of three public hub repositories, as users download them, at full size and narrow.

Full-size contents follow the public repositories (values and keys, including the old
``_diffusers_version`` stamps and keys today's classes no longer take); "narrow" keeps every key
and shrinks only widths, depths and sample sizes so the test suite can load them in milliseconds.
Where each came from (found with the code search over public repositories; no hub access here):

- google/ddpm-cifar10-32 (flat: model_index.json, config.json, scheduler_config.json at the root):
  the UNet2DModel config as copied from huggingface.co/google/ddpm-cifar10-32 into public DDPM
  unlearning code ("Model configs from https://huggingface.co/google/ddpm-cifar10-32/tree/main");
  ``attention_head_dim: null`` as in the sibling google/ddpm-cat-256 config printed in
  whaler404/Hf-Learn (diffusers_learn/api/models/unets/unet2dmodel/unet2dmodel.md); the
  DDPMScheduler 0.1.1 config (fixed_large, clip_sample) from the same sources; model_index.json
  with the DDPMPipeline components as diffusers prints them for the google/ddpm-* repos.
- facebook/DiT-XL-2-256: transformer/config.json saved as ``Transformer2DModel`` by diffusers
  0.12.0.dev0 (the XL/2 config reproduced in public DiT text-pipeline code, sample_size 32 for
  256 px); scheduler/scheduler_config.json, the DDIMScheduler 0.12.0.dev0 config reproduced in
  public token-merging code; vae/ the sd-vae-ft-ema AutoencoderKL; model_index.json with
  ``id2label`` (1000 classes; names here are placeholders).
- stable-diffusion-v1-5/stable-diffusion-v1-5: model_index.json (diffusers 0.6.0, with
  feature_extractor and safety_checker) as shown in diffusers' own loading docs; the unet, vae,
  text_encoder, scheduler and preprocessor configs in the format of diffusers/tiny-stable-
  diffusion-torch (printed in public code) with SD v1's values (UNet 320/640/1280/1280, CLIP
  ViT-L/14 text 768 x 12 layers, transformers 4.22 config with bos/eos ids 0/2); the
  tokenizer_config.json format (AddedToken dicts) as written by public SD repair scripts.
"""

from __future__ import annotations

from typing import Any, Literal

Size = Literal["narrow", "full"]

# --- google/ddpm-cifar10-32 -----------------------------------------------------------------------

DDPM_CIFAR10_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.1.1",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}
DDPM_CIFAR10_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_large",
}


def ddpm_cifar10_unet(size: Size) -> dict[str, Any]:
    narrow = size == "narrow"
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": "0.0.4",
        "act_fn": "silu",
        "attention_head_dim": None,
        "block_out_channels": [16, 32, 32, 32] if narrow else [128, 256, 256, 256],
        "center_input_sample": False,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "in_channels": 3,
        "layers_per_block": 1 if narrow else 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-06,
        "norm_num_groups": 8 if narrow else 32,
        "out_channels": 3,
        "sample_size": 32,
        "time_embedding_type": "positional",
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    }


# --- facebook/DiT-XL-2-256 ------------------------------------------------------------------------

DIT_VERSION = "0.12.0.dev0"
DIT_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": DIT_VERSION,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "trained_betas": None,
}


def dit_index() -> dict[str, Any]:
    return {
        "_class_name": "DiTPipeline",
        "_diffusers_version": DIT_VERSION,
        "id2label": {str(i): f"imagenet class {i}" for i in range(1000)},
        "scheduler": ["diffusers", "DDIMScheduler"],
        "transformer": ["diffusers", "Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def dit_transformer(size: Size) -> dict[str, Any]:
    narrow = size == "narrow"
    return {
        "_class_name": "Transformer2DModel",
        "_diffusers_version": DIT_VERSION,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "attention_head_dim": 8 if narrow else 72,
        "cross_attention_dim": None,
        "dropout": 0.0,
        "in_channels": 4,
        "norm_elementwise_affine": False,
        "norm_num_groups": 32,
        "norm_type": "ada_norm_zero",
        "num_attention_heads": 2 if narrow else 16,
        "num_embeds_ada_norm": 1000,
        "num_layers": 2 if narrow else 28,
        "num_vector_embeds": None,
        "only_cross_attention": False,
        "out_channels": 8,
        "patch_size": 2,
        "sample_size": 8 if narrow else 32,
        "upcast_attention": False,
        "use_linear_projection": False,
    }


def autoencoder_kl(size: Size, *, version: str, sample_size: int) -> dict[str, Any]:
    """SD v1's / sd-vae-ft-ema's AutoencoderKL (8x downsampling, 4 latent channels)."""
    narrow = size == "narrow"
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": version,
        "act_fn": "silu",
        "block_out_channels": [8, 8, 16, 16] if narrow else [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1 if narrow else 2,
        "norm_num_groups": 8 if narrow else 32,
        "out_channels": 3,
        "sample_size": sample_size,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


# --- stable-diffusion-v1-5/stable-diffusion-v1-5 --------------------------------------------------

SD_VERSION = "0.6.0"
SD_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": SD_VERSION,
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": SD_VERSION,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD_FEATURE_EXTRACTOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
# The real safety_checker/ holds a CLIP vision model a teacher never loads; its config only names it.
SD_SAFETY_CHECKER = {
    "_name_or_path": "CompVis/stable-diffusion-safety-checker",
    "architectures": ["StableDiffusionSafetyChecker"],
    "model_type": "clip",
}


def sd_unet(size: Size) -> dict[str, Any]:
    narrow = size == "narrow"
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": SD_VERSION,
        "act_fn": "silu",
        # SD v1's legacy meaning: the number of heads (8), not their width
        "attention_head_dim": 8,
        "block_out_channels": [32, 32, 64, 64] if narrow else [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 32 if narrow else 768,
        "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1 if narrow else 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8 if narrow else 32,
        "out_channels": 4,
        "sample_size": 8 if narrow else 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


def sd_text_encoder(size: Size, vocab_size: int) -> dict[str, Any]:
    """CLIP ViT-L/14's text tower as SD v1.5 ships it (transformers 4.22 era: bos/eos ids 0 and 2)."""
    narrow = size == "narrow"
    return {
        "_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 32 if narrow else 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 37 if narrow else 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 4 if narrow else 12,
        "num_hidden_layers": 2 if narrow else 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "torch_dtype": "float32",
        "transformers_version": "4.22.0.dev0",
        # the fixture's own small BPE vocabulary; full size keeps CLIP's 49408-row embedding table
        "vocab_size": vocab_size if narrow else 49408,
    }


def _added_token(content: str) -> dict[str, Any]:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


SD_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": _added_token("<|startoftext|>"),
    "do_lower_case": True,
    "eos_token": _added_token("<|endoftext|>"),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": _added_token("<|endoftext|>"),
}
SD_SPECIAL_TOKENS = {
    key: {k: v for k, v in _added_token(content).items() if k != "__type"}
    for key, content in (
        ("bos_token", "<|startoftext|>"),
        ("eos_token", "<|endoftext|>"),
        ("unk_token", "<|endoftext|>"),
    )
} | {"pad_token": "<|endoftext|>"}
