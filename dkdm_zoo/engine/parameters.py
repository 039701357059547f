"""Which parameters of a network train: what optimisers, the EMA and previews act on."""

from __future__ import annotations

from torch import nn


def trained_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters a network trains (all of a full student's; a LoRA student's adapters)."""
    return [p for p in module.parameters() if p.requires_grad]
