"""One-step generators for BOOT: any student backbone as g(eps, t, condition) -> signal y_t.

The wrapper records the backbone's class and config, so ``OneStepGenerator.from_pretrained``
rebuilds any architecture (plugins included) without the registry; the recorded class is imported
only from diffusers, dkdm_zoo or an installed plugin (``dkdm_zoo.model_classes``), checked first.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dkdm_zoo.model_classes import class_reference, resolve_model_class


class OneStepGenerator(ModelMixin, ConfigMixin):
    """g(eps, t, c): where the teacher's DDIM trajectory from ``eps`` is at t, in signal form.

    The signal is y_t = (x_t - sigma_t * eps) / alpha_t, so y_0 = x_0 and sampling is one call
    at t = 0. The backbone takes ``eps`` where a denoiser takes x_t; its first ``channels``
    output channels are y_t (extra variance channels of a learned-variance backbone are unused).
    """

    @register_to_config
    def __init__(self, backbone_class: str, backbone_config: dict[str, Any], channels: int):
        super().__init__()
        config = {k: v for k, v in dict(backbone_config).items() if not k.startswith("_")}
        cls = resolve_model_class(backbone_class, where="the one-step generator's config (backbone_class)")
        self.backbone = cls.from_config(config)
        self.channels = channels

    @classmethod
    def wrap(cls, backbone: ModelMixin, channels: int) -> OneStepGenerator:
        """A generator around ``backbone`` (its weights copied, e.g. after teacher initialisation)."""
        config = {k: v for k, v in dict(backbone.config).items() if not k.startswith("_")}  # no _name_or_path
        generator = cls(class_reference(backbone), config, channels)
        generator.backbone.load_state_dict(backbone.state_dict())
        return generator

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        kwargs: dict[str, Tensor] = {}
        if class_labels is not None:
            kwargs["class_labels"] = class_labels
        if encoder_hidden_states is not None:
            kwargs["encoder_hidden_states"] = encoder_hidden_states
        return self.backbone(sample, timestep, **kwargs)[:, : self.channels]

    @torch.no_grad()
    def generate(
        self, noise: Tensor, class_labels: Tensor | None = None, encoder_hidden_states: Tensor | None = None
    ) -> Tensor:
        """One network evaluation: x_0 = g(eps, 0, c)."""
        t = torch.zeros(noise.shape[0], dtype=torch.long, device=noise.device)
        return self(noise, t, class_labels=class_labels, encoder_hidden_states=encoder_hidden_states)


def load_matching_weights(target: nn.Module, source: nn.Module) -> float:
    """Initialise ``target`` from ``source`` when EVERY target tensor has a match (name up to a
    wrapper prefix, and shape); otherwise leave ``target`` untouched.

    Returns the fraction of the target's tensors that matched (1.0 means the copy was made); used
    to initialise a generator from its teacher when the architectures agree, as BOOT does.
    """
    by_suffix: dict[str, Tensor] = {}
    for key, value in source.state_dict().items():
        parts = key.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), value)
    target_state = target.state_dict()
    matched: dict[str, Tensor] = {}
    for key, value in target_state.items():
        parts = key.split(".")
        suffixes = (".".join(parts[i:]) for i in range(len(parts)))
        match = next((by_suffix[sfx] for sfx in suffixes if sfx in by_suffix), None)
        if match is not None and match.shape == value.shape:
            matched[key] = match.to(value.dtype).clone()
    fraction = len(matched) / max(len(target_state), 1)
    if fraction == 1.0:
        target.load_state_dict(matched)
    return fraction
