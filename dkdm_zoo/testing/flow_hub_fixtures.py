"""Random-weight copies of the flow-matching repos people download, written by the REAL pipeline
classes' ``save_pretrained`` (StableDiffusion3Pipeline, FluxPipeline, SanaPipeline), and their hub cache.

    build_flow_repo("stabilityai/stable-diffusion-3.5-medium", folder)       # narrow
    build_flow_hub_cache(cache_dir)                                           # models--ORG--NAME/...

Tokenizers are small vocabularies built here in each real format (no vocabulary can be downloaded):
CLIP's byte-level BPE (``hub_fixtures.write_clip_tokenizer``; SD3's tokenizer_2 pads with "!"), a T5
Unigram with T5's special tokens and 100 extra ids, a Gemma BPE with <pad>/<eos>/<bos>/<unk>/<mask>
at ids 0-4 and <bos> prepended. Saved by transformers 5, they are tokenizer.json files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dkdm_zoo.testing import flow_hub_configs as configs
from dkdm_zoo.testing.flow_hub_configs import FLUX_DEV, FLUX_SCHNELL, SANA_1600M, SD35_MEDIUM, Size
from dkdm_zoo.testing.hub_fixtures import CORPUS, build_hub_cache, write_clip_tokenizer


def _words() -> list[str]:
    return sorted(set(CORPUS.lower().replace(".", " ").replace(",", " ").split()))


def _chars() -> list[str]:
    return sorted(set("".join(_words())) | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:"))


def clip_tokenizer(*, pad_token: str | None = None) -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    if pad_token is not None:  # SD3's tokenizer_2 (CLIP-G) pads with "!"
        tokenizer.pad_token = pad_token
    return tokenizer


def t5_tokenizer() -> Any:
    """T5's Unigram layout: <pad> 0, </s> 1, <unk> 2, pieces, then 100 <extra_id_N>; appends </s>."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -5.0) for c in _chars()]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(_words())]
    return T5TokenizerFast(vocab=vocab, extra_ids=100, model_max_length=512)


def gemma_tokenizer() -> Any:
    """Gemma's BPE layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4; <bos> prepended."""
    from transformers import GemmaTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for piece in ["▁", *_chars()]:
        vocab.setdefault(piece, len(vocab))
    merges = []
    for word in _words():
        current = "▁"
        for char in word:
            if current + char not in vocab:
                merges.append((current, char))
                vocab[current + char] = len(vocab)
            current += char
    return GemmaTokenizerFast(vocab=vocab, merges=merges, add_bos_token=True, model_max_length=8192)


def _clip(cls: Any, fields: dict[str, Any]) -> Any:
    from transformers import CLIPTextConfig

    return cls(CLIPTextConfig(**fields))


def _t5(size: Size, tokenizer: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**configs.t5_xxl(size, len(tokenizer))))


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def sd35_medium_pipeline(size: Size = "narrow", seed: int = 0, *, t5: bool = True) -> Any:
    """A random-weight StableDiffusion3Pipeline with SD3.5-medium's configs (not saved); ``t5=False``
    leaves text_encoder_3 / tokenizer_3 out (4.7B of the full 8.1B parameters), as the pipeline allows."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(pad_token="!"), t5_tokenizer()
    _seeded(seed)
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**configs.sd35_medium_transformer(size)),
        vae=AutoencoderKL(**configs.kl_vae_16(size, scaling_factor=1.5305, shift_factor=0.0609)),
        text_encoder=_clip(CLIPTextModelWithProjection, configs.clip_l(size, len(tokenizer))),
        text_encoder_2=_clip(CLIPTextModelWithProjection, configs.clip_g(size, len(tokenizer_2))),
        text_encoder_3=_t5(size, tokenizer_3) if t5 else None,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        tokenizer_3=tokenizer_3 if t5 else None,
        scheduler=FlowMatchEulerDiscreteScheduler(**configs.SD3_SCHEDULER),
    )


def build_sd35_medium(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    sd35_medium_pipeline(size, seed).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def flux_pipeline(size: Size = "narrow", seed: int = 0, *, dev: bool = False) -> Any:
    """A random-weight FluxPipeline with FLUX.1-schnell's (or -dev's) configs (not saved)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    _seeded(seed)
    return FluxPipeline(
        transformer=FluxTransformer2DModel(**configs.flux_transformer(size, guidance_embeds=dev)),
        vae=AutoencoderKL(**configs.kl_vae_16(size, scaling_factor=0.3611, shift_factor=0.1159)),
        text_encoder=_clip(CLIPTextModel, configs.clip_l(size, len(tokenizer))),
        text_encoder_2=_t5(size, tokenizer_2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler(
            **(configs.FLUX_DEV_SCHEDULER if dev else configs.FLUX_SCHNELL_SCHEDULER)
        ),
    )


def _build_flux(folder: Path, *, size: Size, seed: int, dev: bool) -> Path:
    flux_pipeline(size, seed, dev=dev).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_flux_schnell(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    return _build_flux(folder, size=size, seed=seed, dev=False)


def build_flux_dev(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    return _build_flux(folder, size=size, seed=seed, dev=True)


def sana_pipeline(size: Size = "narrow", seed: int = 0) -> Any:
    """A random-weight SanaPipeline with Sana_1600M_1024px's configs (not saved)."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = gemma_tokenizer()
    _seeded(seed)
    return SanaPipeline(
        transformer=SanaTransformer2DModel(**configs.sana_transformer(size)),
        vae=AutoencoderDC(**configs.dc_ae_f32c32(size)),
        text_encoder=Gemma2Model(Gemma2Config(**configs.gemma2_2b(size, len(tokenizer)))),
        tokenizer=tokenizer,
        scheduler=DPMSolverMultistepScheduler(**configs.SANA_SCHEDULER),
    )


def build_sana_1600m(folder: Path, *, size: Size = "narrow", seed: int = 0) -> Path:
    sana_pipeline(size, seed).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


FLOW_BUILDERS: dict[str, Callable[..., Path]] = {
    SD35_MEDIUM: build_sd35_medium,
    FLUX_SCHNELL: build_flux_schnell,
    FLUX_DEV: build_flux_dev,
    SANA_1600M: build_sana_1600m,
}


def build_flow_repo(
    repo_id: str, folder: str | os.PathLike[str], *, size: Size = "narrow", **options: Any
) -> Path:
    """Write a random-weight copy of ``repo_id`` (one of ``FLOW_BUILDERS``) into ``folder``."""
    return FLOW_BUILDERS[repo_id](Path(folder), size=size, **options)


def build_flow_hub_cache(
    cache_dir: str | os.PathLike[str],
    *,
    size: Size = "narrow",
    repos: tuple[str, ...] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Every repository of ``repos`` (default: all of ``FLOW_BUILDERS``) built once and laid out in ``cache_dir``."""
    return build_hub_cache(cache_dir, size=size, repos=repos, work_dir=work_dir, builders=FLOW_BUILDERS)
