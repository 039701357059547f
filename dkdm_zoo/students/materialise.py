"""Where networks made from another network get their weights: whole on this process, or empty.

Under FSDP over several processes (``engine.sharding``) only the main process needs the full weights
of a network it copies (a teacher-copy or pruned student, a one-step method's fake score): the engine
shards each network and every other process receives its shard from the main one (accelerate's
``cpu_ram_efficient_loading`` broadcast). Those processes build the copies inside ``empty_copies()``:
the same modules with their parameters on the meta device (no memory), their buffers (small, and
some are not in a state dict, so nothing would send them) copied as usual. Everywhere else (one
process, DDP, the main process) ``copy_network`` is ``copy.deepcopy`` and ``new_network`` builds
normally, so nothing changes there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

Module = TypeVar("Module", bound=nn.Module)

_STATE = {"empty": False}


@contextmanager
def empty_copies(enabled: bool = True) -> Iterator[None]:
    """Inside: copies and new networks made from a source have their parameters on the meta device."""
    previous = _STATE["empty"]
    _STATE["empty"] = enabled
    try:
        yield
    finally:
        _STATE["empty"] = previous


def copies_are_empty() -> bool:
    return _STATE["empty"]


def copy_network(source: Module) -> Module:
    """A copy of ``source`` with tensors of its own (``copy.deepcopy``); under ``empty_copies`` its
    parameters are on the meta device (shapes, dtypes, ``requires_grad`` and ties kept)."""
    if not _STATE["empty"]:
        return copy.deepcopy(source)
    return meta_copy(source)


def meta_copy(source: Module) -> Module:
    """``source`` copied with its parameters on the meta device and its buffers copied."""
    from torch._subclasses.fake_tensor import FakeTensor

    def empty(t: torch.Tensor) -> torch.Tensor:  # from the shape alone: a fake source stays out of it
        return torch.empty(t.shape, dtype=t.dtype, device="meta")

    memo: dict[int, Any] = {
        id(p): nn.Parameter(empty(p), requires_grad=p.requires_grad) for p in source.parameters()
    }
    # a teacher built with its weights unread (teachers.unread, a plan): its buffers are fake too
    memo.update({id(b): empty(b) for b in source.buffers() if isinstance(b, FakeTensor)})
    return copy.deepcopy(source, memo)


def new_network(build: Callable[[], Module]) -> Module:
    """``build()``; under ``empty_copies`` its parameters are created on the meta device (buffers
    are not: see the module's docstring). The caller loads nothing into them there."""
    if not _STATE["empty"]:
        return build()
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()


def held_parameters(module: nn.Module) -> int:
    """How many of ``module``'s parameter values this process holds (those not on the meta device)."""
    return sum(p.numel() for p in module.parameters() if not p.is_meta)
