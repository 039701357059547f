"""The plan `distill --dry-run` prints (or gives as JSON): memory per process under ddp and fsdp at
``--processes N``, network by network, the verdict on ``--gpu`` (``dkdm_zoo.engine.memory``
computes it), compute, teacher forwards and the time estimates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
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
    from dkdm_zoo.engine.memory import (
        ACCELERATOR_MEMORY,
        accelerator_memory,
        per_process,
        unused_levers,
        verdict,
    )
    from dkdm_zoo.engine.sharding import choose_sharding

    n = processes if processes is not None else int(os.environ.get("WORLD_SIZE", "1"))
    memory = accelerator_memory(gpu)
    if memory is None:
        raise UserError(f"--gpu {gpu!r}: its memory is unknown; known: {', '.join(ACCELERATOR_MEMORY)}")
    sharding = choose_sharding(recipe.train, explicit="sharding" in recipe.train_set)
    from dkdm_zoo.engine.phases import phases_of

    plans = {name: per_process(built, budget, name, n) for name in ("ddp", "fsdp")}
    for plan in plans.values():  # the start and the export beside the training loop
        plan.phases = phases_of(built, budget, plan)
    levers = unused_levers(recipe.train, plans, n)
    return MemoryPlans(sharding, n, plans, gpu, memory, verdict(plans, n, gpu, memory, levers))


def print_memory(console: Any, memory: MemoryPlans) -> None:
    """A table: one row per network and part, one column per sharding."""
    ddp, fsdp = memory.plans["ddp"], memory.plans["fsdp"]
    unit, scale = ("GiB", 2**30) if ddp.peak >= 2**30 else ("MiB", 2**20)
    console.print(
        f"memory per process ({unit}) at {memory.processes} process(es); this recipe: {memory.sharding}"
    )
    rows: list[tuple[str, float, float]] = []
    for a, b in zip(ddp.networks, fsdp.networks, strict=True):
        # a LoRA network's frozen base is the teacher's own tensors: in the teacher's row, not again
        shared = f" + {_count(a.shared)} teacher's" if a.shared else ""
        rows.append((f"{a.name} weights ({_count(a.params)}{shared} params)", a.weights, b.weights))
        if a.gradients or b.gradients:
            rows.append((f"{a.name} gradients", a.gradients, b.gradients))
            rows.append((f"{a.name} AdamW moments", a.optimizer, b.optimizer))
        if a.ema or b.ema:
            rows.append((f"{a.name} EMA", a.ema, b.ema))
        if a.buckets:
            rows.append((f"{a.name} DDP gradient buckets", a.buckets, b.buckets))
        if a.activations:
            rows.append((f"{a.name} activations (at the batch)", a.activations, b.activations))
    for name, size in ddp.state.items():
        rows.append((f"method state: {name}", size, fsdp.state.get(name, 0)))
    if fsdp.gathered:
        rows.append(("fsdp units gathered + their grads", 0.0, fsdp.gathered))
    if fsdp.offloaded:
        rows.append(("fsdp shards in host memory", 0.0, fsdp.offloaded))
    rows.append(("total: the training loop", ddp.total, fsdp.total))
    if ddp.phases is not None and fsdp.phases is not None:
        rows.append(
            (
                "start-up (teacher as loaded and cast)",
                ddp.phases.start_up,
                fsdp.phases.start_up,
            )
        )
        what = f" (+ {ddp.phases.export_copy})" if ddp.phases.export_copy else ""
        rows.append((f"export{what}", ddp.phases.export, fsdp.phases.export))
        rows.append(("largest phase (the verdict's)", ddp.peak, fsdp.peak))
    width = max(40, *(len(label) for label, _, _ in rows))
    console.print(f"  {'':<{width}} {'ddp':>10} {'fsdp':>10}")
    for label, a_bytes, b_bytes in rows:
        console.print(f"  {label:<{width}} {a_bytes / scale:>10,.2f} {b_bytes / scale:>10,.2f}")
    if fsdp.refused:
        console.print(f"  note: fsdp refused for this run: {fsdp.refused}")
    for note in ddp.notes + fsdp.notes:
        console.print(f"  note: {note}")


def _count(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def plan_json(budget, recipe, out: Path, *, gpu: str, peak: float, utilisation: float, memory) -> dict:
    """The plan as data, per process (the batch is per process): memory under the recipe's sharding
    at ``--processes`` (and under both, network by network), the verdict, compute, time."""
    train = recipe.train
    init_s, train_s = budget.seconds(train.steps, peak, utilisation)
    chosen = memory.plans[memory.sharding]
    return {
        "out": str(out),
        "teacher": recipe.teacher.name,
        "student": recipe.student.name,
        "method": recipe.method.name,
        "sharding": memory.sharding,
        "processes": memory.processes,
        "steps": train.steps,
        "batch_size_per_process": train.batch_size,
        "parameters": {
            "teacher": budget.teacher_params,
            "student": budget.student_params,
            "other_trainable": budget.other_params,
        },
        # the largest phase; the training loop's parts are in memory_bytes
        "memory_per_process_bytes": chosen.peak,
        "memory_phases_bytes": chosen.phases.as_json() if chosen.phases is not None else None,
        "memory_per_process_is": "the largest of memory_phases_bytes: "
        + (chosen.phases.largest_name if chosen.phases is not None else "training"),
        "memory_bytes": {
            "weights_gradients_adamw_ema": sum(n.total - n.activations for n in chosen.networks),
            **{f"state_{name}": size for name, size in chosen.state.items()},
            "activations": sum(n.activations for n in chosen.networks),
            "fsdp_gathered": chosen.gathered,
        },
        "memory_per_process": {name: p.as_json() for name, p in memory.plans.items()},
        "accelerator_memory_bytes": memory.accelerator_bytes,
        "verdict": memory.verdict,
        "teacher_forwards": budget.init_forwards + budget.train_forwards,
        "teacher_forwards_init": budget.init_forwards,
        "teacher_forwards_training": budget.train_forwards,
        "flops": budget.flops_per_step,  # per training step and process
        "passes": {name: {"forward": f, "backward": b} for name, (f, b) in budget.passes.items()},
        "estimate": {
            "accelerator": gpu,
            "utilisation": utilisation,
            "init_s": init_s,
            "training_s": train_s,
            **_cpu_estimate(budget, train.steps, utilisation),
        },
        "details": budget.details,
    }


def _cpu_estimate(budget, steps: int, utilisation: float) -> dict:
    """The same estimate on this machine's CPU (its measured fp32 matmul rate)."""
    from dkdm_zoo.engine.budget import cpu_flops

    rate = cpu_flops()
    init_s, train_s = budget.seconds(steps, rate, utilisation)
    return {"cpu_flops": rate, "cpu_init_s": init_s, "cpu_training_s": train_s}


def print_plan(
    console, budget, recipe, out: Path, *, gpu: str, peak: float, utilisation: float, memory
) -> None:
    def gib(n: float) -> str:
        return f"{n / 2**30:,.2f} GiB"

    train = recipe.train
    console.print(f"teacher  {recipe.teacher.name}  {budget.teacher_params:,} parameters")
    preset = recipe.student.options.get("preset")  # none named: the student's own default
    named = f" ({preset})" if preset else ""
    console.print(f"student  {recipe.student.name}{named}  {budget.student_params:,} parameters")
    if budget.other_params:
        console.print(f"         other trainable networks: {budget.other_params:,} parameters")
    console.print(f"method   {recipe.method.name}  {recipe.method.options or ''}")
    console.print(
        f"train    {train.steps:,} steps x batch {train.batch_size} x accum {train.grad_accum}  -> {out}"
    )
    console.print(f"         lr {train.lr:g}, warmup {train.warmup_steps}, EMA decay {train.ema_decay:g}")
    for who in sorted(set(recipe.train_defaults.values())):
        keys = [k for k, w in recipe.train_defaults.items() if w == who]
        values = ", ".join(f"{k}={getattr(train, k)!r}" for k in keys)
        console.print(f"         from the defaults of {who}: {values}")
    for key, value in budget.details.items():
        console.print(
            f"         {key} = {value:,}" if isinstance(value, int) else f"         {key} = {value}"
        )
    from dkdm_zoo.cli.plan import print_memory

    print_memory(console, memory)
    passes = ", ".join(
        f"{name} {fwd:g} forward + {bwd:g} backward" for name, (fwd, bwd) in budget.passes.items()
    )
    console.print(f"per sample and step: {passes}")
    if budget.flops_per_step is not None:
        console.print(f"compute  {budget.flops_per_step / 1e12:,.3f} TFLOP per step per process")
    init, tr = budget.init_forwards, budget.train_forwards
    console.print(
        f"teacher forwards per process: init {init:,} + training {tr:,} = {init + tr:,} (samples; CFG counts twice)"
    )
    from dkdm_zoo.engine.budget import cpu_flops

    cpu = cpu_flops()
    for where, rate, kind in ((gpu, peak, "bf16"), ("this CPU", cpu, "fp32 matmul, measured")):
        init_s, train_s = budget.seconds(train.steps, rate, utilisation)
        if init_s is not None and train_s is not None:
            console.print(
                f"estimate on {where} at {utilisation:.0%} of {rate / 1e12:,.3g} TFLOP/s {kind}: init "
                f"{_duration(init_s)}, training {_duration(train_s)} ({_duration(train_s / train.steps)}/step)"
            )
    console.print(f"verdict: {memory.verdict}")


def _duration(seconds: float) -> str:
    if seconds < 1:  # a small run is not "0.0 s"
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
