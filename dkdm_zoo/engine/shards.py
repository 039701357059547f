"""Sharded checkpoints (``train.sharding = "fsdp"``): every process writes its own shards of every
network's weights, AdamW moments and the student's EMA with ``torch.distributed.checkpoint`` into
safetensors files (its Hugging Face storage: the layout of each tensor is JSON in the files' headers,
nothing is unpickled), in the checkpoint's temp folder like every other file; the main process
writes the optimisers' param groups and the EMA's counters as JSON.

Reading back loads each process's shards in place (``dcp.load``), then hands the optimiser state to
``set_state_dict``: at the same number of processes the run continues bit for bit. Another number of
processes is refused before anything is read (``engine.restore``): the method state and RNG are per
process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

NETWORKS = "networks"  # the folder of the DCP safetensors shards
GROUPS = "optimizer-groups.json"  # per network: param groups and which parameters have AdamW state
EMA_JSON = "ema.json"


def _torch_optimizer(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def save_networks(folder: Path, trained: dict[str, Any], ema: Any) -> dict[str, Any]:
    """Collective: every process writes its shards into ``folder/networks``. Returns the JSON files
    (name -> data) the main process writes beside them: param groups, the EMA's counters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict

    flat: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, net in trained.items():
        model_state, optim_state = get_state_dict(net.module, _torch_optimizer(net.optimizer))
        flat.update({f"{name}/model/{fqn}": value for fqn, value in model_state.items()})
        keys: dict[str, list[str]] = {}
        for fqn, state in optim_state["state"].items():
            keys[fqn] = sorted(state)
            flat.update({f"{name}/optim/{fqn}/{key}": value for key, value in state.items()})
        groups[name] = {"param_groups": optim_state["param_groups"], "state_keys": keys}
    files: dict[str, Any] = {GROUPS: groups}
    if ema is not None:
        student = trained["student"].module
        names = [fqn for fqn, _ in student.named_parameters()]
        flat.update({f"ema/{fqn}": p for fqn, p in zip(names, ema.shadow_params, strict=True)})
        files[EMA_JSON] = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    (folder / NETWORKS).mkdir(exist_ok=True)
    dcp.save(flat, storage_writer=HuggingFaceStorageWriter(str(folder / NETWORKS), save_distributed=True))
    return files


def load_networks(folder: Path, trained: dict[str, Any], ema: Any) -> None:
    """Collective: each process's shards of every network, optimiser and EMA, loaded in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_state_dict

    groups = json.loads((folder / GROUPS).read_text())
    if not isinstance(groups, dict) or set(groups) != set(trained):
        raise ValueError(f"{GROUPS}: networks {sorted(groups) if isinstance(groups, dict) else groups} "
                         f"are not this run's {sorted(trained)}")  # fmt: skip
    targets: dict[str, torch.Tensor] = {}
    restored: dict[str, tuple[dict, dict]] = {}
    for name, net in trained.items():
        model_state = get_model_state_dict(net.module)
        targets.update({f"{name}/model/{fqn}": value for fqn, value in model_state.items()})
        optim_state: dict[str, dict[str, torch.Tensor]] = {}
        for fqn, keys in groups[name]["state_keys"].items():
            param = model_state[fqn]
            optim_state[fqn] = {
                key: torch.zeros((), dtype=torch.float32) if key == "step" else torch.zeros_like(param)
                for key in keys
            }
            targets.update({f"{name}/optim/{fqn}/{key}": value for key, value in optim_state[fqn].items()})
        restored[name] = (model_state, optim_state)
    if ema is not None:
        student = trained["student"].module
        names = [fqn for fqn, _ in student.named_parameters()]
        targets.update({f"ema/{fqn}": p for fqn, p in zip(names, ema.shadow_params, strict=True)})
    dcp.load(targets, storage_reader=HuggingFaceStorageReader(str(folder / NETWORKS)))
    for name, net in trained.items():
        model_state, optim_state = restored[name]
        set_state_dict(
            net.module,
            _torch_optimizer(net.optimizer),
            model_state_dict=model_state,
            optim_state_dict={"state": optim_state, "param_groups": groups[name]["param_groups"]},
        )
    if ema is not None:
        scalars = json.loads((folder / EMA_JSON).read_text())
        ema.load_state_dict(scalars)  # the shadows were loaded in place
