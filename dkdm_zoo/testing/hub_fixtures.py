"""Random-weight copies of real hub repositories, in their real layouts, and a Hugging Face cache of them.

    build_repo("google/ddpm-cifar10-32", folder, size="narrow")   # flat DDPMPipeline repo
    build_repo("facebook/DiT-XL-2-256", folder, size="full")      # 675M DiT-XL/2 + its VAE
    build_hub_cache(cache_dir, size="narrow")                     # models--ORG--NAME/{refs,blobs,snapshots}

The JSON files come from ``dkdm_zoo.testing.hub_configs`` (which says where each came from); the
weights are whatever the named classes initialise, saved as safetensors (and, with
``pickle=True``, also as the ``.bin`` files older repos carry; ``safetensors=False`` leaves
only those). The SD tokenizer is a small byte-level BPE in CLIP's file format, learned here from
a few sentences, because no CLIP vocabulary can be downloaded. Tests use "narrow" (same keys,
tiny widths); ``benchmarks/real_teachers.py`` uses "full".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dkdm_zoo.testing import hub_configs as configs
from dkdm_zoo.testing.hub_configs import Size

DDPM_CIFAR10 = "google/ddpm-cifar10-32"
DIT_XL_2_256 = "facebook/DiT-XL-2-256"
SD_V1_5 = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# Text the fixture tokenizer learns its merges from (and what prompts in tests look like).
CORPUS = (
    "a photograph of an astronaut riding a horse. a watercolor painting of a lighthouse at dawn. "
    "a close-up photo of a red fox in the snow. an isometric illustration of a tiny city. "
    "a cat sitting on a chair. a dog running on the beach. the sea at night, with stars."
)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _save_model(
    model: Any,
    folder: Path,
    config: dict[str, Any],
    *,
    safetensors: bool,
    pickle: bool,
    pickle_name: str = "diffusion_pytorch_model.bin",
) -> None:
    """Weights as the class saves them; config.json replaced by the repository's own (old) file."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if safetensors:
        model.save_pretrained(folder, safe_serialization=True)
    if pickle:
        torch.save(model.state_dict(), folder / pickle_name)
    _write_json(folder / "config.json", config)


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def build_ddpm_cifar10(
    folder: Path, *, size: Size = "narrow", seed: int = 0, safetensors: bool = True, pickle: bool = False
) -> Path:
    """google/ddpm-cifar10-32: FLAT, model_index.json + config.json + scheduler_config.json + weights at the root."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    _seeded(seed)
    config = configs.ddpm_cifar10_unet(size)
    _save_model(UNet2DModel.from_config(config), folder, config, safetensors=safetensors, pickle=pickle)
    _write_json(folder / "model_index.json", configs.DDPM_CIFAR10_INDEX)
    _write_json(folder / "scheduler_config.json", configs.DDPM_CIFAR10_SCHEDULER)
    return folder


def build_dit_xl_2_256(
    folder: Path, *, size: Size = "narrow", seed: int = 0, safetensors: bool = True, pickle: bool = False
) -> Path:
    """facebook/DiT-XL-2-256: DiTPipeline with transformer/ (saved as Transformer2DModel), vae/, scheduler/."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    folder = Path(folder)
    options = {"safetensors": safetensors, "pickle": pickle}
    _seeded(seed)
    transformer = configs.dit_transformer(size)
    _save_model(
        DiTTransformer2DModel.from_config(transformer), folder / "transformer", transformer, **options
    )
    vae = configs.autoencoder_kl(
        size, version=configs.DIT_VERSION, sample_size=64 if size == "narrow" else 256
    )
    _save_model(AutoencoderKL.from_config(vae), folder / "vae", vae, **options)
    _write_json(folder / "scheduler" / "scheduler_config.json", configs.DIT_SCHEDULER)
    _write_json(folder / "model_index.json", configs.dit_index())
    return folder


def build_sd15(
    folder: Path, *, size: Size = "narrow", seed: int = 0, safetensors: bool = True, pickle: bool = False
) -> Path:
    """stable-diffusion-v1-5: unet/, vae/, text_encoder/, tokenizer/, scheduler/ and the feature_extractor/
    and safety_checker/ folders a teacher never needs (the safety checker here has no weights at all)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    options = {"safetensors": safetensors, "pickle": pickle}
    vocab_size = write_clip_tokenizer(folder / "tokenizer")
    _seeded(seed)
    unet = configs.sd_unet(size)
    _save_model(UNet2DConditionModel.from_config(unet), folder / "unet", unet, **options)
    vae = configs.autoencoder_kl(
        size, version=configs.SD_VERSION, sample_size=64 if size == "narrow" else 512
    )
    _save_model(AutoencoderKL.from_config(vae), folder / "vae", vae, **options)
    text = configs.sd_text_encoder(size, vocab_size)
    fields = {k: v for k, v in text.items() if not k.startswith("_") and k != "architectures"}
    encoder = CLIPTextModel(CLIPTextConfig(**fields))
    _save_model(encoder, folder / "text_encoder", text, pickle_name="pytorch_model.bin", **options)
    _write_json(folder / "scheduler" / "scheduler_config.json", configs.SD_SCHEDULER)
    _write_json(folder / "feature_extractor" / "preprocessor_config.json", configs.SD_FEATURE_EXTRACTOR)
    _write_json(folder / "safety_checker" / "config.json", configs.SD_SAFETY_CHECKER)
    _write_json(folder / "model_index.json", configs.SD_INDEX)
    return folder


BUILDERS: dict[str, Callable[..., Path]] = {
    DDPM_CIFAR10: build_ddpm_cifar10,
    DIT_XL_2_256: build_dit_xl_2_256,
    SD_V1_5: build_sd15,
}


def build_repo(
    repo_id: str, folder: str | os.PathLike[str], *, size: Size = "narrow", **options: Any
) -> Path:
    """Write a random-weight copy of ``repo_id`` (one of ``BUILDERS``) into ``folder``."""
    return BUILDERS[repo_id](Path(folder), size=size, **options)


# --- the Hugging Face cache layout ----------------------------------------------------------------


def commit_hash(repo_id: str) -> str:
    """A stable 40-hex "commit" per repository id (refs/main points at it)."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def write_hub_cache(cache_dir: str | os.PathLike[str], repo_id: str, folder: str | os.PathLike[str]) -> Path:
    """Copy ``folder`` into ``cache_dir`` as huggingface_hub lays a download out, and return the snapshot.

    ``models--ORG--NAME/blobs/<sha256>`` holds the contents, ``snapshots/<commit>/<path>`` are
    relative symlinks into blobs/, ``refs/main`` names the commit.
    """
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    commit = commit_hash(repo_id)
    snapshot = repo / "snapshots" / commit
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = file.relative_to(folder)
        digest = _sha256(file)
        blob = blobs / digest
        if not blob.exists():
            try:  # a hard link: full-size fixtures are GBs
                os.link(file, blob)
            except OSError:
                shutil.copyfile(file, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def build_hub_cache(
    cache_dir: str | os.PathLike[str],
    *,
    size: Size = "narrow",
    repos: tuple[str, ...] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    builders: Mapping[str, Callable[..., Path]] | None = None,
) -> dict[str, Path]:
    """Every repository of ``repos`` (default: all of ``builders``, default ``BUILDERS``) built once and
    laid out in ``cache_dir``; returns repo id -> snapshot."""
    builders = BUILDERS if builders is None else builders
    work = Path(work_dir) if work_dir is not None else Path(cache_dir) / ".build"
    snapshots = {}
    for repo_id in tuple(builders) if repos is None else repos:
        folder = work / repo_id.replace("/", "--")
        if not (folder / "model_index.json").is_file():
            builders[repo_id](folder, size=size)
        snapshots[repo_id] = write_hub_cache(cache_dir, repo_id, folder)
    return snapshots


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- a CLIP-format byte-level BPE tokenizer -------------------------------------------------------


def byte_alphabet() -> dict[int, str]:
    """Byte -> printable character, the byte-level BPE convention CLIP and GPT-2 use: printable
    Latin-1 bytes stand for themselves, the others are shifted to code points from 256 on."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def learn_merges(text: str, count: int) -> list[tuple[str, str]]:
    """``count`` BPE merges learned greedily from ``text`` (most frequent pair first, ties by name)."""
    alphabet = byte_alphabet()
    words = Counter(text.lower().replace(".", " ").replace(",", " ").split())
    pieces = {}
    for word in words:
        symbols = [alphabet[b] for b in word.encode()]
        symbols[-1] += "</w>"
        pieces[word] = symbols
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, symbols in pieces.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for word, symbols in pieces.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            pieces[word] = merged
    return merges


def write_clip_tokenizer(folder: Path, *, merges: int = 96) -> int:
    """vocab.json + merges.txt (+ CLIP's tokenizer_config.json and special_tokens_map.json); returns
    the vocabulary size. Token order follows CLIP: bytes, bytes + "</w>", merges, then the two specials."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(byte_alphabet().values())
    learned = learn_merges(CORPUS, merges)
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(pair) for pair in learned)]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(tokens)}, ensure_ascii=False)
    )
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in learned)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", configs.SD_TOKENIZER_CONFIG)
    _write_json(folder / "special_tokens_map.json", configs.SD_SPECIAL_TOKENS)
    return len(tokens)
