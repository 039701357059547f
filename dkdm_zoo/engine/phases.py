"""The two moments outside the training loop at which a process peaks (benchmarks/RESULTS.md 9c),
beside the loop that ``engine.memory`` counts; the plan's headline is the largest of the three.

- start-up: the teacher as loaded (``teacher.dtype``; every process loads it whole), plus the cast
  copy of its largest network while ``engine.trainer`` casts it to ``train.teacher_dtype``
  (``Teacher.to`` casts network by network; ``Module.to`` swaps tensors one at a time, but the freed
  memory is not necessarily returned to the system: counting the whole network is the upper bound),
  plus every trained network's own tensors as built (whole: under FSDP process 0 builds them before
  they are sharded; a LoRA network's base is the teacher's, counted once);
- export: what training leaves resident (weights, AdamW moments, EMA, DDP buckets, the method's state;
  not the activations nor the gradients, which every step frees) plus the full copies the export
  builds: a LoRA student whose pipeline class loads no LoRA is merged (``TeacherNetwork.merged``: one
  copy of the base at the dtype training holds it in, the adapters added),
  a stock pipeline's network (DDPMPipeline, StableDiffusionPipeline, DiTPipeline) is a plain copy, and
  under FSDP the final student is gathered whole on process 0 (the largest process is the one counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dkdm_zoo.engine.memory import DTYPE_BYTES, tensor_bytes

#: pipelines whose network is a plain copy of the student's (``export.folder._plain``)
PLAIN_COPIES = frozenset({"DDPMPipeline", "StableDiffusionPipeline", "DiTPipeline"})


@dataclass(frozen=True)
class Phases:
    start_up: float
    training: float
    export: float
    export_copy: str = ""  # what the export copies, in words ("" where it copies nothing)

    def as_json(self) -> dict[str, float]:
        return {"start_up": self.start_up, "training": self.training, "export": self.export}

    @property
    def largest(self) -> float:
        return max(self.start_up, self.training, self.export)

    @property
    def largest_name(self) -> str:
        phases = self.as_json()
        return max(phases, key=phases.__getitem__)  # the first of equals: start_up, training, export


def teacher_start_up(teacher: Any, teacher_dtype: str) -> float:
    """The teacher's bytes as loaded plus the cast copy of its largest network that training casts
    (``Teacher.to``: only networks with a floating tensor of another dtype); read before the cast."""
    target = getattr(torch, teacher_dtype)
    loaded = sum(tensor_bytes(p) for m in teacher.modules() for p in m.parameters())
    copies = [
        sum(p.numel() for p in m.parameters() if p.is_floating_point()) * DTYPE_BYTES[teacher_dtype]
        for m in teacher.modules()
        if any(p.is_floating_point() and p.dtype != target for p in m.parameters())
    ]
    return float(loaded + max(copies, default=0))


def networks_as_built(built: Any) -> float:
    """Every trained network's own tensors (not the teacher's), each counted once, at their dtype."""
    seen = {id(p) for m in built.teacher.modules() for p in m.parameters()}
    total = 0
    for network in built.method.networks().values():
        for p in network.module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += tensor_bytes(p)
    return float(total)


def export_copies(built: Any) -> tuple[float, str]:
    """The bytes of the full copies the export of ``built.student`` holds at once, and what they are."""
    from dkdm_zoo.export.adapters import lora_pipeline
    from dkdm_zoo.export.folder import pipeline_kind
    from dkdm_zoo.students.teacher_net import LORA_KEY, is_teacher_network, lora_network
    from dkdm_zoo.teachers.base import PipelineComponents

    student, spec = built.student, built.teacher.spec
    try:  # as export.run.pipeline_components: a pixel teacher without text lends nothing
        plain = spec.space == "pixel" and spec.conditioning != "text"
        components = PipelineComponents() if plain else built.teacher.pipeline_components()
        kind = pipeline_kind(student, spec, components)
    except Exception:  # noqa: BLE001 - no pipeline (a plugin teacher without its VAE): the export warns
        return 0.0, ""
    lora = lora_network(student)
    if lora is not None:
        if lora_pipeline(student, spec, components) is not None:
            return 0.0, ""  # the adapters alone, for the teacher's own pipeline class
        # the base as training holds it: the teacher's tensors at train.teacher_dtype
        teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
        teacher_bytes = DTYPE_BYTES[built.recipe.train.teacher_dtype]
        base = [p for name, p in lora.network.named_parameters() if LORA_KEY not in name]
        # the merged network is the base's clones with the adapters added (students.teacher_net:
        # TeacherNetwork.merged); a stock class then copies it once more
        merged = sum(
            p.numel() * teacher_bytes if id(p) in teacher_ids and p.is_floating_point() else tensor_bytes(p)
            for p in base
        )
        copies = 2 * merged if kind in PLAIN_COPIES else merged
        return float(copies), f"LoRA merged for {kind}"
    if kind in PLAIN_COPIES:
        network = student.network if is_teacher_network(student) else student
        return float(sum(tensor_bytes(p) for p in network.parameters())), f"plain copy for {kind}"
    return 0.0, ""


def training_resident(memory: Any) -> float:
    """What a ``ProcessMemory`` keeps between steps: without activations and gradients (freed each
    step: ``zero_grad(set_to_none=True)``) and without FSDP's gathered units."""
    kept = sum(n.weights + n.optimizer + n.ema + n.buckets for n in memory.networks)
    return float(kept + sum(memory.state.values()))


def phases_of(built: Any, budget: Any, memory: Any) -> Phases:
    """The three phases of one process under ``memory`` (an ``engine.memory.ProcessMemory``)."""
    start = budget.teacher_start_up_bytes + networks_as_built(built)
    copies, what = export_copies(built)
    if memory.sharding == "fsdp" and memory.processes > 1:  # trainer: shards.gather_full on process 0
        teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
        copies += sum(tensor_bytes(p) for p in built.student.parameters() if id(p) not in teacher_ids)
        what = ", ".join(x for x in ("the student gathered whole", what) if x)
    return Phases(start, float(memory.total), training_resident(memory) + copies, what)
