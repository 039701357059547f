"""The memory part of `distill --dry-run`: per process under ddp and fsdp at ``--processes N``,
network by network, and the verdict on ``--gpu`` (``dkdm_zoo.engine.memory`` computes it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dkdm_zoo.errors import UserError


@dataclass
class MemoryPlans:
    sharding: str  # what this recipe would run with (train.sharding, or the accelerate config's FSDP)
    processes: int
    plans: dict[str, Any]  # "ddp" / "fsdp" -> engine.memory.ProcessMemory
    accelerator: str
    accelerator_bytes: float
    verdict: str


def memory_plans(built: Any, budget: Any, recipe: Any, processes: int | None, gpu: str) -> MemoryPlans:
    from dkdm_zoo.engine.memory import ACCELERATOR_MEMORY, accelerator_memory, per_process, verdict
    from dkdm_zoo.engine.sharding import choose_sharding

    n = processes if processes is not None else int(os.environ.get("WORLD_SIZE", "1"))
    memory = accelerator_memory(gpu)
    if memory is None:
        raise UserError(f"--gpu {gpu!r}: its memory is unknown; known: {', '.join(ACCELERATOR_MEMORY)}")
    sharding = choose_sharding(recipe.train, explicit="sharding" in recipe.train_set)
    plans = {name: per_process(built, budget, name, n) for name in ("ddp", "fsdp")}
    return MemoryPlans(sharding, n, plans, gpu, memory, verdict(plans, n, gpu, memory))


def print_memory(console: Any, memory: MemoryPlans) -> None:
    """A table: one row per network and part, one column per sharding."""
    ddp, fsdp = memory.plans["ddp"], memory.plans["fsdp"]
    unit, scale = ("GiB", 2**30) if ddp.total >= 2**30 else ("MiB", 2**20)
    console.print(
        f"memory per process ({unit}) at {memory.processes} process(es); this recipe: {memory.sharding}"
    )
    rows: list[tuple[str, float, float]] = []
    for a, b in zip(ddp.networks, fsdp.networks, strict=True):
        rows.append((f"{a.name} weights ({_count(a.params)} params)", a.weights, b.weights))
        if a.gradients or b.gradients:
            rows.append((f"{a.name} gradients", a.gradients, b.gradients))
            rows.append((f"{a.name} AdamW moments", a.optimizer, b.optimizer))
        if a.ema or b.ema:
            rows.append((f"{a.name} EMA", a.ema, b.ema))
        if a.buckets:
            rows.append((f"{a.name} DDP gradient buckets", a.buckets, b.buckets))
        if a.activations:
            rows.append((f"{a.name} activations (x batch)", a.activations, b.activations))
    for name, size in ddp.state.items():
        rows.append((f"method state: {name}", size, fsdp.state.get(name, 0)))
    if fsdp.gathered:
        rows.append(("fsdp units gathered + their grads", 0.0, fsdp.gathered))
    if fsdp.offloaded:
        rows.append(("fsdp shards in host memory", 0.0, fsdp.offloaded))
    rows.append(("total", ddp.total, fsdp.total))
    console.print(f"  {'':<40} {'ddp':>10} {'fsdp':>10}")
    for label, a_bytes, b_bytes in rows:
        console.print(f"  {label:<40} {a_bytes / scale:>10,.2f} {b_bytes / scale:>10,.2f}")
    for note in ddp.notes + fsdp.notes:
        console.print(f"  note: {note}")


def _count(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)
