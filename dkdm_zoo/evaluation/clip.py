"""A real CLIP model as a data-free judge: image features (for FD between two image sets) and the
CLIP score of an image against its prompt.

The model loads as teachers do (``teachers.sources``): a local folder, a hub id read from the
Hugging Face cache (offline) or downloaded, safetensors only, through transformers' own
``CLIPModel`` and ``CLIPProcessor``; its config must say ``model_type: clip`` (anything else is
refused in one line, never read as CLIP). The image preprocessing (resize, crop, mean/std) is the
processor's own, from the checkpoint's preprocessor_config.json.

CLIP score (Hessel et al. 2021, as torchmetrics computes it): max(100 cos(image, text), 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dkdm_zoo.errors import UserError

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


@dataclass
class ClipJudge:
    """A CLIP model and its processor on one device."""

    model: Any
    processor: Any
    name: str
    device: torch.device

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def image_features(self, images: Tensor, batch_size: int = 32) -> Tensor:
        """L2-normalised image embeddings (N, D) of images (N, 1 or 3, H, W) in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise UserError(f"CLIP takes images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].float().clamp(-1, 1)
            chunk = chunk.expand(-1, 3, -1, -1) if chunk.shape[1] == 1 else chunk
            pixels = ((chunk + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            inputs = self.processor(images=list(pixels), return_tensors="pt")
            embeds = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
            out.append(_normalised(embeds))
        return torch.cat(out).cpu()

    @torch.no_grad()
    def text_features(self, prompts: list[str], batch_size: int = 64) -> Tensor:
        """L2-normalised text embeddings (N, D); prompts longer than CLIP's context are truncated."""
        out = []
        for start in range(0, len(prompts), batch_size):
            inputs = self.processor(
                text=prompts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
            )
            embeds = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
            )
            out.append(_normalised(embeds))
        return torch.cat(out).cpu()

    def scores(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """CLIP score per pair: max(100 cos, 0)."""
        return (100.0 * (image_features * text_features).sum(-1)).clamp(min=0)


def _normalised(embeds: Any) -> Tensor:
    # transformers 5 may return a model output holding the projected embeddings
    tensor = embeds if isinstance(embeds, Tensor) else embeds.pooler_output
    return torch.nn.functional.normalize(tensor.float(), dim=-1)


def load_clip(
    id_or_folder: str = DEFAULT_CLIP_MODEL,
    *,
    device: torch.device | str = "cpu",
    allow_pickle: bool = False,
) -> ClipJudge:
    """CLIP from a folder or a hub id (the cache offline), as teachers load: safetensors only."""
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as exc:
        raise UserError("the CLIP judge needs transformers: pip install transformers") from exc
    from dkdm_zoo.teachers.loading import load_pretrained, read_config
    from dkdm_zoo.teachers.sources import resolve_source

    source = resolve_source(id_or_folder)
    config = read_config(source, None)
    model_type = config.get("model_type")
    if model_type != "clip":
        raise UserError(
            f"{source.where()}/config.json: model_type = {model_type!r}, expected 'clip' (a CLIPModel "
            "checkpoint such as openai/clip-vit-large-patch14): pass one with --clip-model"
        )
    model = load_pretrained(CLIPModel, source, None, dtype_kwarg="dtype", allow_pickle=allow_pickle)
    processor = load_pretrained(CLIPProcessor, source, None, weights=False)
    device = torch.device(device)
    return ClipJudge(model.to(device).eval().requires_grad_(False), processor, source.name, device)
