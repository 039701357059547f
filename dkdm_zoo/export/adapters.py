"""A LoRA student exported as what it is: a diffusers LoRA for its teacher's own pipeline class.

The folder holds the adapters (``pytorch_lora_weights.safetensors``, by the class's own
``save_lora_weights``, at the root as a Hub LoRA repository has them), the scheduler that makes the
teacher's pipeline sample what ``dkdm-zoo sample`` samples (``scheduler/``), ``lora_pipeline.json``
(the pipeline class and the network's config, which the card's call reads) and the card: no full
network weights (an SDXL LoRA is ~100 MB where the merged pipeline is ~7 GB). Where the teacher's
pipeline class loads no LoRA (``DDPMPipeline``, ``DiTPipeline``, PixArt, ``DKDMZooPipeline``), the
export falls back to the merged pipeline (``export.folder.save_pipeline``) and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import diffusers

from dkdm_zoo.export.folder import pipeline_kind, pipeline_scheduler
from dkdm_zoo.export.lora_card import INFO
from dkdm_zoo.export.stock import save_lora
from dkdm_zoo.students.teacher_net import lora_network

if TYPE_CHECKING:
    from diffusers import ModelMixin

    from dkdm_zoo.spec import TeacherSpec
    from dkdm_zoo.teachers.base import PipelineComponents


def lora_pipeline(student: ModelMixin, spec: TeacherSpec, components: PipelineComponents) -> str | None:
    """The teacher's pipeline class that loads this LoRA student's adapters, or None (none does, or
    ``student`` is no LoRA)."""
    lora = lora_network(student)
    if lora is None:
        return None
    kind = pipeline_kind(student, spec, components)
    cls = getattr(diffusers, kind, None)
    if getattr(cls, "save_lora_weights", None) is None or not hasattr(lora.network, "load_lora_adapter"):
        return None
    return kind if pipeline_scheduler(kind, student, spec) is not None else None


def save_adapters(
    student: ModelMixin, spec: TeacherSpec, components: PipelineComponents, folder: str | Path
) -> str | None:
    """Write the adapters, the scheduler and ``lora_pipeline.json`` into ``folder``; returns the
    teacher's pipeline class name, or None (nothing written) where it loads no LoRA."""
    kind = lora_pipeline(student, spec, components)
    if kind is None:
        return None
    lora = lora_network(student)
    assert lora is not None  # lora_pipeline checked it
    folder = Path(folder)
    save_lora(getattr(diffusers, kind), lora, folder, subfolder=None)
    pipeline_scheduler(kind, student, spec).save_pretrained(folder / "scheduler")
    network_config = {k: v for k, v in lora.network.config.items() if not k.startswith("_")}
    info = {"_class_name": kind, "network_config": network_config}
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return kind
