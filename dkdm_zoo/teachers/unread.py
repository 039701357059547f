"""Teachers built from their configs alone, their weights left unread: what `distill --dry-run` plans
with. Every network's parameters and buffers are fake tensors (torch's FakeTensorMode: shapes, dtype
and device, no memory), so the plan of an SDXL, SD3.5-large or FLUX run takes a minute or two and a
few GiB of host memory, where loading the weights took many minutes and more memory than the machine
had (a 12B FLUX transformer is 24 GB in bf16). The plan counts and measures shapes only
(``engine.budget``), so nothing in it changes. Fake rather than meta: on a fake CPU tensor every op
takes the kernel it would take for real (on meta, attention falls back to the math path and saves its
whole score matrix), and library code that looks at values knows it is tracing (transformers' mask
checks fail on meta).

Inside ``weights_unread()``, ``teachers.loading.load_pretrained`` checks that the weights are there
(as always) and builds the model from its config, in the dtype the weights would load in:
``from_pretrained``'s ``torch_dtype`` with the class's ``_keep_in_fp32_modules`` kept in float32
(T5's ``wo``), as diffusers and transformers do. Classes that are neither a diffusers model nor a
transformers model (tokenizers, processors, a plugin's own class) load as usual.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_STATE: dict[str, Any] = {"unread": False, "mode": None}


@contextmanager
def weights_unread(enabled: bool = True) -> Iterator[None]:
    """Inside: teachers' networks are built from their configs as fake tensors (see the module)."""
    previous = dict(_STATE)
    _STATE.update(unread=enabled, mode=None)
    try:
        yield
    finally:
        _STATE.update(previous)


def weights_are_unread() -> bool:
    return _STATE["unread"]


def buildable_empty(cls: Any) -> bool:
    """Whether ``cls`` is a network this module builds from its config (diffusers or transformers)."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    return isinstance(cls, type) and issubclass(cls, (ModelMixin, PreTrainedModel))


def empty_model(cls: Any, location: str, dtype: torch.dtype, **config_kwargs: Any) -> nn.Module:
    """``cls`` built from the config at ``location`` (``subfolder``, ``local_files_only`` as for
    ``from_pretrained``) on the meta device, cast as ``from_pretrained`` would, then made fake."""
    from diffusers import ModelMixin

    with torch.device("meta"):  # parameters and buffers: nothing computed at build time is real
        if issubclass(cls, ModelMixin):
            model = cls.from_config(cls.load_config(location, **config_kwargs))
        else:
            config = cls.config_class.from_pretrained(location, **config_kwargs)
            model = cls._from_config(config)
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    keep += list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    keep_fp32 = re.compile("|".join(re.escape(name) for name in keep)) if keep else None
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            wanted = torch.float32 if keep_fp32 is not None and keep_fp32.search(name) else dtype
            if tensor.dtype != wanted:
                tensor.data = tensor.data.to(wanted)
    as_fake([model])  # computing with it at build time (a prompt encoded) gives shapes, on the CPU's kernels
    return model.eval()


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def is_unread(module: nn.Module) -> bool:
    """Whether ``module`` holds shapes only (meta or fake tensors): built with its weights unread."""
    from torch._subclasses.fake_tensor import FakeTensor

    return any(t.is_meta or isinstance(t, FakeTensor) for t in _tensors(module))


def as_fake(
    modules: list[nn.Module], device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> None:
    """Every meta or fake parameter and buffer of ``modules`` made a fake tensor on ``device`` (floating
    ones cast to ``dtype`` when given): computing with them gives fake results of the right shapes,
    dtypes and kernels. A fake tensor changes in place (``.data``), so a tensor two networks share
    (a LoRA's base and the teacher) stays shared; a meta one is replaced, ties kept. One FakeTensorMode
    for all: fakes of two modes cannot meet in one op. Modules' ``.to()`` cannot convert fakes, so
    casting unread networks comes here. Real tensors are left as they are."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    present = next((t.fake_mode for m in modules for t in _tensors(m) if isinstance(t, FakeTensor)), None)
    mode = _STATE["mode"] or present or FakeTensorMode(allow_non_fake_inputs=True)
    if _STATE["unread"]:
        _STATE["mode"] = mode
    device = torch.device(device)
    made: dict[int, torch.Tensor] = {}
    originals: list[torch.Tensor] = []  # alive until the end: their ids key ``made``

    def empty_like(t: torch.Tensor) -> torch.Tensor:
        wanted = dtype if dtype is not None and t.is_floating_point() else t.dtype
        with mode:
            return torch.empty_strided(t.shape, t.stride(), dtype=wanted, device=device)

    def fake(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, FakeTensor):
            t.data = empty_like(t)  # in place: whoever holds this tensor sees the change
            return t
        if not t.is_meta:
            return t  # real: left as it is
        originals.append(t)
        new = empty_like(t)
        return nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new

    for module in modules:
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for name, t in table.items():
                    if t is not None:
                        if id(t) not in made:  # a tensor two modules share is made once
                            made[id(t)] = fake(t)
                        table[name] = made[id(t)]


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module.to(dtype)``, for networks built with their weights unread too."""
    if is_unread(module):
        device = next(_tensors(module)).device
        as_fake([module], device, dtype)
        return module
    return module.to(dtype)
