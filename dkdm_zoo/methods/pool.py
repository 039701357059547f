"""The DKDM pool: N noisy samples, each with its next timestep index and its condition reference.

Samples (float32) live on the training device or, when they do not fit there, in pinned host
memory with only the batch crossing the bus each step. Timestep indices and condition references
live on the host (numpy): every decision of a step (which slots, which finished, which
conditions) is made there, so a training step never waits for the device. A condition is stored
by reference (a class id, a prompt index: 8 bytes), never as an embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from dkdm_zoo.teachers.base import host_to_device

Placement = Literal["auto", "device", "host"]
DEVICE_BUDGET = 0.3  # "auto": the pool goes on the device if it takes at most this share of its memory
K_DTYPE, REF_DTYPE = np.int32, np.int64


def slot_bytes(sample_shape: tuple[int, ...], conditional: bool) -> int:
    """Bytes of one slot: the float32 sample, its timestep index and, if conditional, its reference."""
    return (
        4 * int(np.prod(sample_shape))
        + np.dtype(K_DTYPE).itemsize
        + (np.dtype(REF_DTYPE).itemsize if conditional else 0)
    )


def choose_placement(placement: str, pool_bytes: int, device: torch.device) -> Literal["device", "host"]:
    """Where the samples go: as asked, or ("auto") on the device when they fit its budget."""
    if device.type != "cuda":
        return "device"  # host and device are the same memory
    if placement in ("device", "host"):
        return placement  # type: ignore[return-value]
    total = torch.cuda.get_device_properties(device).total_memory
    return "device" if pool_bytes <= DEVICE_BUDGET * total else "host"


class Pool:
    def __init__(
        self,
        n: int,
        sample_shape: tuple[int, ...],
        device: torch.device,
        *,
        placement: str,
        conditional: bool,
    ):
        self.device = device
        self.placement = choose_placement(placement, n * slot_bytes(sample_shape, conditional), device)
        self.on_host = self.placement == "host" and device.type == "cuda"
        storage = torch.device("cpu") if self.on_host else device
        self.x = torch.zeros((n, *sample_shape), dtype=torch.float32, device=storage, pin_memory=self.on_host)
        self.k = np.zeros(n, dtype=K_DTYPE)
        self.refs = np.zeros(n, dtype=REF_DTYPE) if conditional else None
        self._pending: tuple[np.ndarray, Tensor, Any] | None = None  # a host write-back in flight

    def __len__(self) -> int:
        return len(self.k)

    @property
    def nbytes(self) -> int:
        return self.x.nelement() * 4 + self.k.nbytes + (self.refs.nbytes if self.refs is not None else 0)

    def read(self, idx: np.ndarray) -> Tensor:
        """The samples of slots ``idx`` on the device."""
        self._finish_write()
        if self.on_host:
            return self.x[torch.from_numpy(idx)].pin_memory().to(self.device, non_blocking=True)
        return self.x[host_to_device(idx, self.device)]

    def write(self, idx: np.ndarray, values: Tensor) -> None:
        """Store new samples for slots ``idx`` (a host pool receives them asynchronously)."""
        if not self.on_host:
            self.x[host_to_device(idx, self.device)] = values.to(self.x.dtype)
            return
        self._finish_write()
        staging = torch.empty(values.shape, dtype=self.x.dtype, pin_memory=True)
        staging.copy_(values, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self._pending = (idx, staging, done)

    def _finish_write(self) -> None:
        """Land the last asynchronous write-back (waits for that copy only, not for the device queue)."""
        if self._pending is not None:
            idx, staging, done = self._pending
            done.synchronize()
            self.x[torch.from_numpy(idx)] = staging
            self._pending = None

    def state_dict(self) -> dict[str, Tensor]:
        self._finish_write()
        state = {"pool_x": self.x.cpu(), "pool_k": torch.from_numpy(self.k.copy())}
        if self.refs is not None:
            state["pool_refs"] = torch.from_numpy(self.refs.copy())
        return state

    def load_state_dict(self, state: dict[str, Any], *, partial: bool = False) -> None:
        """Restore the slots of ``state``; ``partial``: into the first slots of a bigger pool."""
        self._pending = None
        n = len(state["pool_k"]) if partial else len(self)
        self.x[:n].copy_(state["pool_x"])
        self.k[:n] = state["pool_k"].numpy()
        if self.refs is not None:
            self.refs[:n] = state["pool_refs"].numpy()
