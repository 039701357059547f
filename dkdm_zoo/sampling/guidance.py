"""Classifier-free guidance, written once: teachers (``Teacher.denoise``) and the exported
``DKDMZooPipeline`` both combine their conditional and unconditional outputs here."""

from __future__ import annotations

import torch
from torch import Tensor


def guided(cond_out: Tensor, uncond_out: Tensor, scale: float, channels: int) -> Tensor:
    """uncond + scale (cond - uncond) on the first ``channels`` (the prediction); any further channels
    (a learned variance) are taken from the conditional branch, as DiT and IDDPM do."""
    pred = uncond_out[:, :channels] + scale * (cond_out[:, :channels] - uncond_out[:, :channels])
    return torch.cat([pred, cond_out[:, channels:]], dim=1)


def applies(scale: float | None) -> bool:
    """Whether a guidance scale changes anything (None and 1 mean no guidance)."""
    return scale is not None and scale != 1.0
