"""Per-step scalars kept on the device and read once per logging window.

On a GPU every ``float(tensor)`` / ``.item()`` waits for the queue to drain. The training loop
therefore never reads a device value per step: losses and logged scalars are summed on the
device, the first non-finite loss is remembered there, and ``read`` fetches everything (all
processes, one gather) when a window closes: every ``train.log_every`` steps and before anything
is checkpointed or previewed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class WindowReading:
    """A closed window, reduced over processes: means per key, and the first non-finite step."""

    means: dict[str, float]
    first_nonfinite_step: int | None
    counters: dict[str, int] = field(default_factory=dict)


class MetricWindow:
    """Sums of logged scalars since the last read, on ``device``; no host reads until ``read``."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.host_sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    def add_loss(self, key: str, loss: Tensor, step: int) -> None:
        """Accumulate a loss and remember ``step`` if it is the window's first non-finite one."""
        loss = loss.detach()
        bad = ~torch.isfinite(loss)
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        self.add(key, loss)

    def add(self, key: str, value: Tensor | float) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if isinstance(value, Tensor):
            value = value.detach().float().reshape(())
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        else:
            self.host_sums[key] = self.host_sums.get(key, 0.0) + float(value)

    def read(self, acc: Any, counters: dict[str, int] | None = None) -> WindowReading:
        """Close the window: one gather over processes, one host read. Means are over processes too."""
        keys = sorted(self.sums)
        counters = dict(counters or {})
        parts = [self.first_bad.double().reshape(1)]
        parts += [self.sums[k].double().reshape(1) for k in keys]
        parts.append(torch.tensor([float(self.counts[k]) for k in keys], dtype=torch.float64))
        parts.append(torch.tensor([float(v) for v in counters.values()], dtype=torch.float64))
        vector = torch.cat([p.to(self.device) for p in parts])
        rows = acc.gather(vector.reshape(1, -1)).tolist()  # the window's only host read
        n = len(keys)
        bad = [int(r[0]) for r in rows if r[0] >= 0]
        means = {}
        for i, key in enumerate(keys):
            total = sum(r[1 + i] for r in rows)
            count = sum(r[1 + n + i] for r in rows)
            means[key] = total / count if count else math.nan
        for key, total in self.host_sums.items():
            means[key] = total / self.counts[key]  # host values: this process's mean
        summed = {k: int(round(sum(r[1 + 2 * n + i] for r in rows))) for i, k in enumerate(counters)}
        self._reset()
        return WindowReading(means, min(bad) if bad else None, summed)

    @property
    def empty(self) -> bool:
        return not self.counts
