"""Memory per process under DDP and FSDP2 at N processes, network by network, and the verdict on
an accelerator: the part of `distill --dry-run --processes N` that says what fits.

Per trainable network: fp32 weights, gradients, AdamW's two moments, the student's EMA copy, and
DDP's gradient buckets (a second copy of the gradients, which DDP reduces through). Under FSDP2 the
weights, gradients, moments and EMA are shards (1/N each); on top of them each process holds the
units it is computing with, gathered whole: every network's root unit (what is outside its blocks:
FSDP2 keeps the root gathered between forward and backward), two blocks (the one computing and the
one prefetched) and one network's unsharded gradients before their reduce-scatter. The teacher's
denoiser is sharded like a network without gradients; its other parts (VAE, text encoders) stay
whole. Activations (measured, at the batch per process) and the method's state (the DKDM pool,
condition references) do not shard.

The start (every process builds the networks whole before they are sharded) and the export are
phases of their own (``engine.phases``); the verdict judges the largest. What the plan leaves out:
the framework itself (CUDA context and kernels, some hundreds of MB; a Python process with torch and
diffusers imported on CPU) and allocator fragmentation. The verdict keeps 10% of the accelerator's
memory for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from dkdm_zoo.engine.sharding import block_classes, teacher_denoiser

#: memory per accelerator (bytes, decimal GB as the vendors state them)
ACCELERATOR_MEMORY: dict[str, float] = {
    "H200": 141e9,
    "H100": 80e9,
    "H100-PCIE": 80e9,
    "H100-NVL": 94e9,
    "A100": 80e9,
    "L40S": 48e9,
    "A10G": 24e9,
    "L4": 24e9,
}
HEADROOM = 0.9  # of an accelerator's memory the verdict counts on
ADAMW = 8  # two fp32 moments per parameter
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # train.teacher_dtype's bytes per parameter


def accelerator_memory(name: str) -> float | None:
    upper = name.upper().replace(" ", "-")
    for key in sorted(ACCELERATOR_MEMORY, key=len, reverse=True):
        if key in upper:
            return ACCELERATOR_MEMORY[key]
    return None


@dataclass(frozen=True)
class Units:
    """A network's FSDP units: the root's parameter count and the largest block's."""

    params: int
    root: int
    largest_block: int


def units_of(module: nn.Module) -> Units:
    names = set(block_classes(module))
    blocks: list[int] = []

    def walk(m: nn.Module) -> None:
        for child in m.children():
            if type(child).__name__ in names:
                blocks.append(sum(p.numel() for p in child.parameters()))
            else:
                walk(child)

    walk(module)
    total = sum(p.numel() for p in module.parameters())
    return Units(total, total - sum(blocks), max(blocks, default=0))


@dataclass
class NetworkMemory:
    name: str
    params: int  # the network's own parameters, counted in ``weights``
    weights: float
    gradients: float = 0.0
    optimizer: float = 0.0
    ema: float = 0.0
    buckets: float = 0.0  # DDP's gradient buckets
    activations: float = 0.0
    shared: int = 0  # frozen parameters that are the teacher's own tensors (counted in its row)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.ema + self.buckets + self.activations

    def as_json(self) -> dict[str, float | int]:
        return {
            "params": self.params,
            "shared_with_teacher_params": self.shared,
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "ema": self.ema,
            "ddp_buckets": self.buckets,
            "activations": self.activations,
            "total": self.total,
        }


@dataclass
class ProcessMemory:
    sharding: str
    processes: int
    networks: list[NetworkMemory]
    state: dict[str, int]  # the method's state (pool, condition store)
    gathered: float = 0.0  # FSDP: units gathered whole while they compute, and their gradients
    offloaded: float = 0.0  # FSDP cpu_offload: shards kept in host memory instead
    refused: str = ""  # why training refuses this sharding for this run (the verdict leaves it out)
    notes: list[str] = field(default_factory=list)
    #: start-up / training / export (``engine.phases.Phases``); None: the training loop alone
    phases: Any = None

    @property
    def total(self) -> float:
        """The training loop's memory."""
        return sum(n.total for n in self.networks) + sum(self.state.values()) + self.gathered

    @property
    def peak(self) -> float:
        """The largest phase: what the verdict judges."""
        return self.total if self.phases is None else max(self.total, self.phases.largest)

    def as_json(self) -> dict[str, Any]:
        return {
            "sharding": self.sharding,
            "processes": self.processes,
            "networks": {n.name: n.as_json() for n in self.networks},
            "state": dict(self.state),
            "fsdp_gathered": self.gathered,
            "host_offloaded": self.offloaded,
            "total": self.total,
            **({} if self.phases is None else {"phases": self.phases.as_json(), "peak": self.peak}),
        }


def per_process(built: Any, budget: Any, sharding: str, processes: int) -> ProcessMemory:
    """The memory of one of ``processes`` processes training ``built`` under ``sharding``."""
    cfg = built.recipe.train
    fsdp = sharding == "fsdp" and processes > 1
    n = processes if fsdp else 1
    compute = 2 if cfg.mixed_precision in ("bf16", "fp16") else 4
    teacher_bytes = DTYPE_BYTES[cfg.teacher_dtype]
    activations = budget.network_activations
    networks: list[NetworkMemory] = []
    units: list[tuple[Units, int, bool]] = []  # (units, bytes per gathered parameter, trained)

    teacher_params = budget.teacher_params
    denoiser = teacher_denoiser(built.teacher)
    shard_params = sum(p.numel() for p in denoiser.parameters()) if denoiser is not None else 0
    if fsdp and denoiser is not None:
        units.append((units_of(denoiser), min(compute, teacher_bytes), False))
    whole = teacher_params - shard_params if fsdp else teacher_params
    teacher = NetworkMemory(
        "teacher", teacher_params, (whole + (shard_params / n if fsdp else 0)) * teacher_bytes
    )
    teacher.activations = activations.get("teacher", 0.0)
    networks.append(teacher)

    teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
    for name, network in built.method.networks().items():
        module = network.module
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        # frozen tensors that are the teacher's own (a LoRA network's base) are counted once, in the
        # teacher's row at its dtype; a network's own frozen tensors at theirs
        own = [p for p in module.parameters() if not p.requires_grad and id(p) not in teacher_ids]
        frozen = sum(p.numel() for p in own)
        memory = NetworkMemory(name, params + frozen, (params * 4 + sum(tensor_bytes(p) for p in own)) / n)
        memory.shared = sum(p.numel() for p in module.parameters() if id(p) in teacher_ids)
        memory.gradients = params * 4 / n
        memory.optimizer = params * ADAMW / n
        memory.ema = params * 4 / n if name == "student" and cfg.ema_decay > 0 else 0.0
        memory.buckets = 0.0 if fsdp else params * 4 * (processes > 1)
        memory.activations = activations.get(name, 0.0)
        networks.append(memory)
        if fsdp:
            units.append((units_of(module), compute, True))

    result = ProcessMemory(sharding if fsdp else "ddp", processes, networks, dict(budget.state_bytes))
    if fsdp:
        roots = sum(u.root * size for u, size, _ in units)
        blocks = 2 * max((u.largest_block * size for u, size, _ in units), default=0)
        grads = max(((u.root + u.largest_block) * 4 for u, _, trained in units if trained), default=0)
        result.gathered = roots + blocks + grads
        if cfg.cpu_offload:  # the shards live in host memory; the device holds what computes
            for memory in networks:
                if memory.name == "teacher":
                    continue
                result.offloaded += memory.weights + memory.gradients + memory.optimizer + memory.ema
                memory.weights = memory.gradients = memory.optimizer = memory.ema = 0.0
        if any(memory.shared for memory in networks):  # engine.sharding.refuse_shared_weights
            result.refused = "LoRA on the teacher's own tensors"
    elif sharding == "fsdp":
        result.notes.append("one process: nothing to shard, fsdp runs as a single process")
    return result


def tensor_bytes(p: nn.Parameter) -> int:
    return p.numel() * p.element_size()


def unused_levers(cfg: Any, plans: dict[str, ProcessMemory], processes: int) -> list[str]:
    """What would lower the memory per process that this run does not do yet, cheapest first: a
    suggestion the run already follows (bf16 on a bf16 run) is no suggestion."""
    levers: list[str] = []
    if cfg.mixed_precision == "no":
        levers.append("train.mixed_precision='bf16'")
    if cfg.teacher_dtype == "float32":
        levers.append("train.teacher_dtype='bfloat16'")
    activations = any(n.activations for plan in plans.values() for n in plan.networks)
    if activations and not cfg.activation_checkpointing:
        levers.append("train.activation_checkpointing=true")
    # fsdp over several processes refuses networks on the teacher's tensors (at one process too: the
    # lever is more of them); ddp's memory per process does not fall with N
    if not any(n.shared for plan in plans.values() for n in plan.networks):
        levers.append("more processes" + ("" if processes > 1 and cfg.sharding == "fsdp" else " with fsdp"))
        if not cfg.cpu_offload:
            levers.append("train.cpu_offload=true (fsdp)")
    if cfg.batch_size > 1:
        levers.append("a smaller train.batch_size (train.grad_accum keeps the batch per step)")
    return levers


def verdict(
    plans: dict[str, ProcessMemory],
    processes: int,
    accelerator: str,
    memory: float,
    levers: list[str] | None = None,
) -> str:
    """One line: on ``processes`` x ``accelerator``, which sharding fits (with 10% kept free); when
    none does, the ``levers`` (``unused_levers``) the run has left."""
    usable = HEADROOM * memory
    refused = [f"{name} refused: {plan.refused}" for name, plan in plans.items() if plan.refused]
    plans = {name: plan for name, plan in plans.items() if not plan.refused}
    why = f" ({'; '.join(refused)})" if refused else ""
    fits = [name for name, plan in plans.items() if plan.peak <= usable]
    misses = [name for name in plans if name not in fits]
    where = f"{processes} x {memory / 1e9:g} GB ({accelerator})"
    if fits and misses:
        return f"fits {where} with {', '.join(fits)}, not with {', '.join(misses)}{why}"
    if fits:
        return f"fits {where} with {' and '.join(fits)}{why}"
    best = min(plans.values(), key=lambda p: p.peak)
    needs = (
        f"does not fit {where} with {' or '.join(plans)}{why}: {best.sharding} needs "
        f"{best.peak / 1e9:,.1f} GB per process (of {usable / 1e9:,.1f} GB usable)"
    )
    phase = best.phases.largest_name if best.phases is not None and best.peak > best.total else "training"
    if phase != "training":
        # the batch and checkpointing shrink the training loop only, not the start or the export
        held = f" ({best.phases.export_copy})" if phase == "export" and best.phases.export_copy else ""
        needs += f", at the {phase.replace('_', '-')}{held}"
        if levers is not None:
            levers = [lever for lever in levers if "batch_size" not in lever and "checkpointing" not in lever]
    if levers is None:
        return needs
    if not levers:
        return f"{needs}; the run already uses every lever the plan knows: a larger accelerator (--gpu)"
    return (
        f"{needs}; use {', '.join(levers[:-1])} or {levers[-1]}"
        if len(levers) > 1
        else f"{needs}; use {levers[0]}"
    )
