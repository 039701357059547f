"""Random-weight copies of SD 2.1, SDXL base 1.0 and PixArt-α/Σ, written by the real pipeline classes.

    build_modern_repo(SDXL_BASE, folder, size="narrow")
    build_modern_hub_cache(cache_dir)            # models--ORG--NAME/... for every repo here

Each folder is saved by the diffusers pipeline class the hub repository names
(``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``PixArtAlphaPipeline``,
``PixArtSigmaPipeline``) with ``save_pretrained``, then every component's JSON is replaced by the
repository's own file (``sdxl_hub_configs``), so the keys users download are the keys read. The
CLIP tokenizers are the small byte-level BPE of ``hub_fixtures`` (SDXL's second one and SD 2.x's
pad with "!", as the real ones do); the T5 tokenizer is a small Unigram model in tokenizer.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dkdm_zoo.testing import sdxl_hub_configs as configs
from dkdm_zoo.testing.hub_configs import SD_FEATURE_EXTRACTOR, Size
from dkdm_zoo.testing.hub_fixtures import CORPUS, build_hub_cache, write_clip_tokenizer

SD2_1 = "stabilityai/stable-diffusion-2-1"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
PIXART_ALPHA = "PixArt-alpha/PixArt-XL-2-1024-MS"
PIXART_SIGMA = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _clip_tokenizer(folder: Path, *, pad: str = "<|endoftext|>") -> Any:
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder)
    if pad != "<|endoftext|>":  # OpenCLIP's tokenizers pad with "!"
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            data = json.loads((folder / name).read_text())
            data["pad_token"] = pad
            _write_json(folder / name, data)
    return CLIPTokenizer.from_pretrained(folder)


def _clip(config: dict[str, Any], with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    fields = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**fields)).eval()


def _replace_configs(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """The repository's own JSON in place of what save_pretrained wrote (same weights, same keys read)."""
    for rel, data in files.items():
        _write_json(folder / rel, data)


def build_sd21(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    """stabilityai/stable-diffusion-2-1: v-prediction DDIM config, OpenCLIP-H text as CLIPTextModel."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder / ".tokenizer", pad="!")
    torch.manual_seed(seed)
    unet, text = configs.sd2_unet(size), configs.sd2_text_encoder(size, len(tokenizer))
    vae = configs.autoencoder_kl(size, version="0.8.0", sample_size=64 if size == "narrow" else 768)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(vae),
        text_encoder=_clip(text),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_config(unet),
        scheduler=DDIMScheduler.from_config(configs.SD2_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    _replace_configs(
        folder,
        {
            "unet/config.json": unet,
            "vae/config.json": vae,
            "text_encoder/config.json": text,
            "scheduler/scheduler_config.json": configs.SD2_SCHEDULER,
            "model_index.json": configs.SD2_INDEX,
            "feature_extractor/preprocessor_config.json": SD_FEATURE_EXTRACTOR,
        },
    )
    return folder


def build_sdxl(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    """stabilityai/stable-diffusion-xl-base-1.0: two CLIP text towers, text_time UNet, Euler config."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    folder = Path(folder)
    tokenizer = _clip_tokenizer(folder / ".tokenizer")
    tokenizer_2 = _clip_tokenizer(folder / ".tokenizer_2", pad="!")
    torch.manual_seed(seed)
    unet, vae = configs.sdxl_unet(size), configs.sdxl_vae(size)
    text = configs.sdxl_text_encoder(size, len(tokenizer))
    text_2 = configs.sdxl_text_encoder_2(size, len(tokenizer_2))
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_config(vae),
        text_encoder=_clip(text),
        text_encoder_2=_clip(text_2, with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=UNet2DConditionModel.from_config(unet),
        scheduler=EulerDiscreteScheduler.from_config(configs.SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    _replace_configs(
        folder,
        {
            "unet/config.json": unet,
            "vae/config.json": vae,
            "text_encoder/config.json": text,
            "text_encoder_2/config.json": text_2,
            "scheduler/scheduler_config.json": configs.SDXL_SCHEDULER,
            "model_index.json": configs.SDXL_INDEX,
        },
    )
    return folder


def write_t5_tokenizer(folder: Path, *, max_length: int = 512) -> int:
    """A small T5-style Unigram tokenizer (tokenizer.json: <pad> 0, </s> 1, <unk> 2, "▁" pieces, "</s>"
    appended), learned from nothing but the fixture corpus' words; returns the vocabulary size."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for w in CORPUS.lower().replace(".", " ").replace(",", " ").split()})
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [(c, -8.0) for c in chars] + [("▁" + c, -6.0) for c in chars]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "T5Tokenizer",
            "model_max_length": max_length,
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "extra_ids": 0,
            "additional_special_tokens": [],
        },
    )
    _write_json(
        folder / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    )
    return len(vocab)


def build_pixart(folder: Path, *, size: Size = "narrow", seed: int = 0, sigma: bool = True) -> Path:
    """PixArt-α (PixArtAlphaPipeline, SD VAE) or Σ (PixArtSigmaPipeline, SDXL VAE): T5 + DiT + DPM-Solver."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    vocab_size = write_t5_tokenizer(folder / ".tokenizer")
    tokenizer = T5Tokenizer.from_pretrained(folder / ".tokenizer")
    torch.manual_seed(seed)
    transformer = configs.pixart_transformer(size, sigma)
    text = configs.pixart_text_encoder(size, vocab_size)
    fields = {
        k: v for k, v in text.items() if k not in ("architectures", "torch_dtype", "transformers_version")
    }
    if sigma:
        vae = configs.sdxl_vae(size)
    else:
        vae = configs.autoencoder_kl(size, version="0.22.0.dev0", sample_size=64 if size == "narrow" else 512)
    pipeline_class = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = pipeline_class(
        tokenizer=tokenizer,
        text_encoder=T5EncoderModel(T5Config(**fields)).eval(),
        vae=AutoencoderKL.from_config(vae),
        transformer=PixArtTransformer2DModel.from_config(transformer),
        scheduler=DPMSolverMultistepScheduler.from_config(configs.PIXART_SCHEDULER),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    _replace_configs(
        folder,
        {
            "transformer/config.json": transformer,
            "vae/config.json": vae,
            "text_encoder/config.json": text,
            "scheduler/scheduler_config.json": configs.PIXART_SCHEDULER,
            "model_index.json": configs.pixart_index(sigma),
        },
    )
    return folder


BUILDERS: dict[str, Callable[..., Path]] = {
    SD2_1: build_sd21,
    SDXL_BASE: build_sdxl,
    PIXART_ALPHA: lambda folder, **kw: build_pixart(folder, sigma=False, **kw),
    PIXART_SIGMA: lambda folder, **kw: build_pixart(folder, sigma=True, **kw),
}


def build_modern_repo(
    repo_id: str, folder: str | os.PathLike[str], *, size: Size = "narrow", **kw: Any
) -> Path:
    return BUILDERS[repo_id](Path(folder), size=size, **kw)


def build_modern_hub_cache(
    cache_dir: str | os.PathLike[str],
    *,
    size: Size = "narrow",
    repos: tuple[str, ...] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Every repository of ``repos`` (default: all of ``BUILDERS``) built once and laid out in ``cache_dir``."""
    return build_hub_cache(cache_dir, size=size, repos=repos, work_dir=work_dir, builders=BUILDERS)
