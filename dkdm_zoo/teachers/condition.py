"""A batch of teacher conditions (class labels, text states, per-family extras), moved as one."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Condition:
    """A batch of conditions. Class labels use index ``num_classes`` as the null (unconditional) label.

    ``extras`` holds any further per-sample tensors a family's network takes beside the text states
    (pooled projections, SDXL time ids, a text attention mask, FLUX's guidance), keyed by the name
    the family's own ``model_output`` uses; every tensor's first dimension is the batch. They travel
    with the batch (``to``/``select``/``cat``) but are not part of the student contract.
    """

    labels: Tensor | None = None  # (B,) long
    text_embeds: Tensor | None = None  # (B, L, D) encoder hidden states
    prompts: list[str] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        if self.text_embeds is not None:
            return len(self.text_embeds)
        return len(self.prompts or [])

    def to(self, device: torch.device | str) -> Condition:
        return Condition(
            labels=None if self.labels is None else self.labels.to(device),
            text_embeds=None if self.text_embeds is None else self.text_embeds.to(device),
            prompts=self.prompts,
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def select(self, index: Tensor) -> Condition:
        idx = index.tolist()
        return Condition(
            labels=None if self.labels is None else self.labels[index.to(self.labels.device)],
            text_embeds=None
            if self.text_embeds is None
            else self.text_embeds[index.to(self.text_embeds.device)],
            prompts=None if self.prompts is None else [self.prompts[i] for i in idx],
            extras={k: v[index.to(v.device)] for k, v in self.extras.items()},
        )

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        first = conditions[0]
        return Condition(
            labels=None if first.labels is None else torch.cat([c.labels for c in conditions]),
            text_embeds=None if first.text_embeds is None else torch.cat([c.text_embeds for c in conditions]),
            prompts=None if first.prompts is None else [p for c in conditions for p in c.prompts],
            extras={k: torch.cat([c.extras[k] for c in conditions]) for k in first.extras},
        )

    def model_kwargs(self, extras: bool = False) -> dict[str, Tensor]:
        """Keyword arguments of the student contract: ``class_labels`` / ``encoder_hidden_states``, and
        the family's ``extras`` for a student that takes them (the teacher's own network,
        ``students.base.takes_condition_extras``)."""
        kwargs: dict[str, Tensor] = dict(self.extras) if extras else {}
        if self.labels is not None:
            kwargs["class_labels"] = self.labels
        if self.text_embeds is not None:
            kwargs["encoder_hidden_states"] = self.text_embeds
        return kwargs
