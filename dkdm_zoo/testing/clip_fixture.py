"""A random-weight copy of openai/clip-vit-large-patch14 (the CLIP judge's default), written by
transformers' own ``CLIPModel`` / ``CLIPProcessor.save_pretrained``, and laid out as a hub cache.

The configuration keys and the values that are not widths are the repository's (ViT-L/14: patch 14,
image 224, projection 768, quick_gelu, logit scale 2.6592, CLIP's preprocessing mean/std, resize
and crop 224, bicubic); "narrow" shrinks widths and depths only. The tokenizer is the fixture BPE
of ``hub_fixtures`` in CLIP's file format (no CLIP vocabulary can be downloaded here).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from dkdm_zoo.testing.hub_configs import Size
from dkdm_zoo.testing.hub_fixtures import write_clip_tokenizer, write_hub_cache

CLIP_VIT_L_14 = "openai/clip-vit-large-patch14"

# preprocessor_config.json of openai/clip-vit-large-patch14
CLIP_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def clip_config(size: Size, vocab_size: int) -> dict[str, Any]:
    """CLIPConfig arguments of ViT-L/14 (text 768 x 12 layers, vision 1024 x 24, patch 14, image 224)."""
    narrow = size == "narrow"
    text = {
        "hidden_size": 32 if narrow else 768,
        "intermediate_size": 37 if narrow else 3072,
        "num_attention_heads": 4 if narrow else 12,
        "num_hidden_layers": 2 if narrow else 12,
        "max_position_embeddings": 77,
        "vocab_size": vocab_size if narrow else 49408,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "projection_dim": 768,
    }
    vision = {
        "hidden_size": 32 if narrow else 1024,
        "intermediate_size": 37 if narrow else 4096,
        "num_attention_heads": 4 if narrow else 16,
        "num_hidden_layers": 2 if narrow else 24,
        "image_size": 224,
        "patch_size": 14,
        "num_channels": 3,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "projection_dim": 768,
    }
    return {
        "text_config": text,
        "vision_config": vision,
        "projection_dim": 32 if narrow else 768,
        "logit_scale_init_value": 2.6592,
    }


def build_clip(folder: str | os.PathLike[str], *, size: Size = "narrow", seed: int = 0) -> Path:
    """Write the CLIP checkpoint (config.json, model.safetensors, processor and tokenizer files) into ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**clip_config(size, vocab_size)))
    model.save_pretrained(folder, safe_serialization=True)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(**CLIP_PREPROCESSOR), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def build_clip_cache(cache_dir: str | os.PathLike[str], *, size: Size = "narrow") -> Path:
    """The CLIP fixture as the hub cache holds openai/clip-vit-large-patch14; returns the snapshot."""
    work = Path(cache_dir) / ".build" / CLIP_VIT_L_14.replace("/", "--")
    if not (work / "config.json").is_file():
        build_clip(work, size=size)
    return write_hub_cache(cache_dir, CLIP_VIT_L_14, work)
