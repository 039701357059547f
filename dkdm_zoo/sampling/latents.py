"""Latents to images, written once: latent teachers (``decode``) and the exported pipeline decode here."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def decode_latents(vae: Any, latents: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Images in [-1, 1] from diffusion-space latents, as diffusers' pipelines decode them: undo the
    VAE's ``scaling_factor`` (and ``shift_factor`` where its config has one), then ``vae.decode``."""
    config = vae.config
    latents = latents.to(vae.device, dtype or vae.dtype) / config.scaling_factor
    shift = getattr(config, "shift_factor", None)
    if shift is not None:
        latents = latents + shift
    return vae.decode(latents).sample.float().clamp(-1.0, 1.0)
