"""How the processes hold the networks: DDP (every process holds every network whole) or FSDP2
(``torch.distributed.fsdp.fully_shard``) through accelerate's FSDP plugin, ``fsdp_version=2``.

Under ``train.sharding = "fsdp"`` every trainable network is sharded with its optimiser (one
``Accelerator.prepare(network, optimizer)`` each, as accelerate's FSDP2 path takes one model a call),
and so is the teacher's denoiser (frozen: no optimiser). Each network's blocks (the modules of its
outermost ``nn.ModuleList``s: a UNet's down/up blocks, a transformer's layers) are sharding units of
their own, the rest of the network is the root unit. ``cpu_ram_efficient_loading``: processes other
than the main one drop their copy to the meta device and receive the main process's weights, so the
processes start from one set of weights (what DDP's broadcast gives) and only shards stay in memory.

accelerate switches to FSDP only for accelerator devices; on CPU (gloo, ``torchrun``) the engine sets
its state to FSDP itself, so the one code path runs (and is tested) everywhere. A user's accelerate
config that asks for FSDP (``ACCELERATE_USE_FSDP``) is followed when the recipe does not set
``train.sharding``; its plugin settings (reshard after forward, offload, ...) apply where the recipe
says nothing.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from dkdm_zoo.errors import IncompatibleError, UserError

DDP, FSDP = "ddp", "fsdp"
REDUCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def accelerate_config_wants_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def choose_sharding(cfg: Any, explicit: bool) -> str:
    """``train.sharding``, or the user's accelerate config's FSDP when the recipe did not set it."""
    if not accelerate_config_wants_fsdp():
        return cfg.sharding
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise UserError(
            f"your accelerate config asks for FSDP version {version} (FSDP_VERSION); dkdm-zoo shards with "
            "FSDP2: set fsdp_version: 2 in it, or drop its FSDP section and set train.sharding"
        )
    if explicit and cfg.sharding == DDP:
        raise UserError(
            "train.sharding='ddp' but your accelerate config asks for FSDP (ACCELERATE_USE_FSDP): "
            "set train.sharding='fsdp' or launch without the FSDP config"
        )
    return FSDP


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def builds_empty_copies(cfg: Any, explicit: bool, main: bool) -> bool:
    """Whether this process builds the networks copied from the teacher empty (on the meta device):
    under FSDP over several processes, every process but the main one (``main``: global rank 0,
    ``cli.common.is_main_process``) receives its shards from the main one's full weights
    (``prepare_sharded``)."""
    return not main and choose_sharding(cfg, explicit) == FSDP and world_size_from_env() > 1


def network_copies(recipe: Any, main: bool) -> Any:
    """The context to build ``recipe``'s teacher, student and method in (``config.build``): copies of
    the teacher's network (teacher-copy and pruned students, fake scores) are empty on a process that
    will receive its shards of them (``students.materialise``); whole everywhere else."""
    from dkdm_zoo.students.materialise import empty_copies

    return empty_copies(builds_empty_copies(recipe.train, "sharding" in recipe.train_set, main))


def place(module: nn.Module, device: torch.device, channels_last: bool) -> None:
    """``module`` onto ``device`` (and channels-last); an empty copy (parameters on the meta device,
    receiving its shards from the main process) keeps its parameters there and moves its buffers."""
    if any(p.is_meta for p in module.parameters()):
        for sub in module.modules():
            for name, buffer in sub._buffers.items():
                if buffer is not None and not buffer.is_meta:
                    sub._buffers[name] = buffer.to(device)
    else:
        module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)


def make_accelerator(cfg: Any, project_dir: str, sharding: str, cpu: bool) -> Any:
    """The run's Accelerator: DDP, or FSDP2 with the plugin below when there are processes to shard over."""
    from accelerate import Accelerator

    kwargs: dict[str, Any] = dict(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard" if cfg.tracker == "tensorboard" else None,
        project_dir=project_dir,
    )
    if cfg.cpu_offload and sharding != FSDP:
        raise UserError("train.cpu_offload=true offloads FSDP shards: set train.sharding='fsdp' with it")
    if cfg.cpu_offload and cpu:  # FSDP2's offload pins host memory for copies to the accelerator
        raise UserError(
            "train.cpu_offload=true moves FSDP shards from the accelerator to host memory; on CPU they are "
            "there already: set train.cpu_offload=false"
        )
    sharded = sharding == FSDP and world_size_from_env() > 1
    if sharded:
        kwargs["fsdp_plugin"] = fsdp_plugin(cfg)
    acc = Accelerator(**kwargs)
    if sharded:
        _use_fsdp(acc, kwargs["fsdp_plugin"])
    return acc


def fsdp_plugin(cfg: Any) -> Any:
    """accelerate's FSDP2 plugin; settings the recipe does not make are left to the accelerate config."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    options: dict[str, Any] = dict(fsdp_version=2, cpu_ram_efficient_loading=True)
    if "FSDP_AUTO_WRAP_POLICY" not in os.environ:
        options["auto_wrap_policy"] = "transformer_based_wrap"
    if cfg.cpu_offload:
        options["cpu_offload"] = True
    if cfg.mixed_precision == "bf16":  # bf16 compute copies of fp32 master shards
        options["mixed_precision_policy"] = {
            "param_dtype": torch.bfloat16,
            "reduce_dtype": REDUCE_DTYPES[cfg.reduce_dtype],
        }
    return FullyShardedDataParallelPlugin(**options)


def _use_fsdp(acc: Any, plugin: Any) -> None:
    """On CPU accelerate stays MULTI_CPU whatever the plugin: set its (shared) state to FSDP."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if acc.is_fsdp2:
        return
    if acc.distributed_type != DistributedType.MULTI_CPU:
        raise UserError(
            f"train.sharding='fsdp': accelerate set up {acc.distributed_type.value}, not FSDP; "
            "launch with torchrun or accelerate launch on several processes"
        )
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin


def is_sharded(acc: Any) -> bool:
    return bool(getattr(acc, "is_fsdp2", False))


def block_classes(module: nn.Module) -> list[str]:
    """Class names of the modules in ``module``'s shallowest ModuleLists (its blocks: a UNet's
    down and up blocks, a transformer's layers; a one-step generator's backbone's)."""
    level = [module]
    while level:
        lists = [c for m in level for c in m.children() if isinstance(c, nn.ModuleList)]
        if lists:
            names: list[str] = []
            for block in (b for lst in lists for b in lst):
                if type(block).__name__ not in names and any(True for _ in block.parameters()):
                    names.append(type(block).__name__)
            return names
        level = [c for m in level for c in m.children()]
    return []


def prepare_sharded(acc: Any, module: nn.Module, optimizer: Any | None) -> tuple[nn.Module, Any]:
    """``module`` (and its optimiser) sharded in place, its blocks as units of their own."""
    plugin = acc.state.fsdp_plugin
    plugin.transformer_cls_names_to_wrap = block_classes(module)
    if optimizer is None:
        return acc.prepare(module), None
    return acc.prepare(module, optimizer)


def enable_block_checkpointing(module: nn.Module, name: str, required: bool = True) -> bool:
    """diffusers' per-block activation checkpointing on ``module`` (or on the outermost diffusers
    models inside it, e.g. a one-step generator's backbone); ``required``: refuse a network without it."""
    found = []

    def walk(m: nn.Module) -> None:
        if getattr(m, "_supports_gradient_checkpointing", False) and hasattr(
            m, "enable_gradient_checkpointing"
        ):
            found.append(m)
            return
        for child in m.children():
            walk(child)

    walk(module)
    for m in found:
        m.enable_gradient_checkpointing()
    if not found and required:
        raise UserError(
            f"train.activation_checkpointing=true: network '{name}' ({type(module).__name__}) has no diffusers "
            "gradient checkpointing; set train.activation_checkpointing=false"
        )
    return bool(found)


def clip_gradients(acc: Any, module: nn.Module, max_norm: float) -> None:
    """Clip ``module``'s gradients to total norm ``max_norm``. Sharded: accelerate's FSDP2 clipping
    (the same operations, one device mesh), called directly: ``Accelerator.clip_grad_norm_`` first
    finds the prepared model by comparing parameter lists with ``==``, which raises for two networks
    of the same size (SiD's teacher-copy generator and fake score)."""
    if not is_sharded(acc):
        acc.clip_grad_norm_(module.parameters(), max_norm)
        return
    from torch.distributed.tensor import DTensor
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    acc.unscale_gradients()
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    norm = get_total_norm([p.grad for p in params], 2.0)
    norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
    clip_grads_with_norm_(params, max_norm, torch.linalg.vector_norm(torch.stack([norm]), 2.0))


def teacher_denoiser(teacher: Any) -> nn.Module | None:
    """The teacher's denoiser network, or None for a teacher without one (or without parameters)."""
    try:
        network = teacher.denoiser()
    except (IncompatibleError, UserError, NotImplementedError):
        return None
    if not isinstance(network, nn.Module) or not any(True for _ in network.parameters()):
        return None
    return network


def teacher_network(teacher: Any, trained: dict[str, Any]) -> nn.Module | None:
    """The teacher's denoiser to shard, or None: a teacher without one, or one whose weights a
    trained network shares (it is sharded with that network)."""
    network = teacher_denoiser(teacher)
    if network is None:
        return None
    trained_ids = {id(p) for net in trained.values() for p in net.module.parameters()}
    if any(id(p) in trained_ids for p in network.parameters()):
        return None
    return network


def refuse_shared_weights(teacher: Any, declared: dict[str, Any]) -> None:
    """FSDP2 shards a network's parameters in place: a trained network that runs on the teacher's own
    frozen tensors (LoRA adapters on them) would shard them under the teacher and any other network
    that shares them (accelerate's loading also sends a state dict, and a LoRA network's holds only
    its adapters). Refused in one line until the shared base is sharded once for all of them."""
    try:
        base = {id(p) for p in teacher.denoiser().parameters()}
    except (IncompatibleError, UserError, NotImplementedError):
        return
    sharing = [name for name, net in declared.items() if any(id(p) in base for p in net.module.parameters())]
    if sharing:
        raise UserError(
            f"train.sharding='fsdp': {', '.join(sharing)} trains LoRA adapters on the teacher's own frozen "
            "network, which FSDP cannot shard for several networks at once yet; use train.sharding='ddp'"
        )


def meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are on the meta device (no memory): the unsharded
    student the final weights are gathered into on the main process."""
    memo: dict[int, Any] = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in module.parameters()
    }
    return copy.deepcopy(module, memo)


def gather_full(acc: Any, module: nn.Module, skeleton: nn.Module | None) -> nn.Module | None:
    """The full weights of sharded ``module`` in ``skeleton`` on the main process (collective;
    None elsewhere). Only the main process holds the whole network, in host memory."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not acc.is_main_process or skeleton is None:
        return None
    skeleton.load_state_dict(state, assign=True)
    return skeleton


def local_sum(module: nn.Module) -> torch.Tensor:
    """The sum of this process's part of ``module``'s parameters (all of it under DDP), float64."""
    from torch.distributed.tensor import DTensor

    total = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        data = p.detach().to_local() if isinstance(p, DTensor) else p.detach()
        total += data.double().sum().cpu()
    return total
