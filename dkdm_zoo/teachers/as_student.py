"""``--student teacher``: a student made FROM the teacher's own network (whole, pruned), for any family.

A family takes part by implementing what it already implements for methods: ``denoiser()`` (the
network), ``with_denoiser(module)`` and ``model_output(x_t, t, condition)``. The student
(``students.teacher_net.TeacherNetwork``) holds a copy of the network and calls it through
``teacher.with_denoiser(copy).model_output(...)``, so packing, position ids, pooled projections or
``added_cond_kwargs`` stay the family's own code. A family whose network is called plainly
(``network(x, t, class_labels=..., encoder_hidden_states=..., **extras)``) says so with
``student_calling = "diffusers"``: its runs then load and sample without their teacher.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.registry.classes import class_reference, public_config
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.materialise import copies_are_empty, copy_network, new_network
from dkdm_zoo.students.pruning import TRANSFORMER_PRESETS, UNET_PRESETS, copy_weights, prune
from dkdm_zoo.students.teacher_net import PREDICTIONS, NetworkCall, TeacherNetwork, lora_copy
from dkdm_zoo.teachers.condition import Condition

PRESETS = ("full", *UNET_PRESETS, *TRANSFORMER_PRESETS)
#: diffusers' attention projections, as its LoRA training scripts target them
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def family_call(teacher: Any | Callable[[], Any]) -> NetworkCall:
    """The teacher family's own calling code for another copy of its network. ``teacher`` may be a
    callable that builds it on first use (a run folder's original teacher)."""
    cache: dict[str, Any] = {}

    def resolved() -> Any:
        if "teacher" not in cache:
            cache["teacher"] = teacher if hasattr(teacher, "model_output") else teacher()
        return cache["teacher"]

    def call(
        network: nn.Module,
        x: Tensor,
        t: Tensor,
        labels: Tensor | None,
        text: Tensor | None,
        extras: dict[str, Tensor],
    ) -> Tensor:
        cond = None
        if labels is not None or text is not None or extras:
            cond = Condition(labels=labels, text_embeds=text, extras=extras)
        return resolved().with_denoiser(network).model_output(x, t, cond)

    return call


def build(
    spec: TeacherSpec,
    preset: str = "full",
    *,
    teacher: Any = None,
    prediction_type: str | None = None,
    keep_blocks: tuple[int, ...] | None = None,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    lora_targets: tuple[str, ...] = LORA_TARGETS,
    from_scratch: bool = False,
) -> TeacherNetwork:
    """The teacher's network as a student: ``full`` (a copy), ``bk-base``/``bk-small``/``bk-tiny``
    (UNets, BK-SDM) or ``half``/``keep_blocks`` (transformers, depth); kept tensors copied.

    ``prediction_type``: what the network's output is read as (default: the teacher's own); the
    student's output is converted to the student contract (eps, or the flow velocity) from it.
    ``lora_rank``: peft LoRA adapters (``lora_alpha``, default the rank; on ``lora_targets``) on the
    teacher's own network, shared and frozen: only the adapters train, are checkpointed and saved.
    ``from_scratch``: the same (pruned) architecture with its class's own initialisation, nothing
    copied: the control a pruned or copied student is measured against."""
    if teacher is None:
        raise IncompatibleError(
            "student 'teacher' is built from the teacher's own network: it needs the teacher itself, not only its spec"
        )
    if preset not in PRESETS:
        raise UserError(f"student 'teacher' has no preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if keep_blocks is not None and preset not in ("full", "half"):
        raise UserError(
            f"student.keep_blocks prunes transformer depth: it does not combine with preset {preset!r}"
        )
    source = teacher.denoiser()  # IncompatibleError for a family without a network to copy
    prediction = prediction_type or teacher.spec.prediction_type
    allowed = PREDICTIONS[teacher.spec.process]
    if prediction not in allowed:
        raise UserError(
            f"student.prediction_type {prediction!r} does not fit the {teacher.spec.process} teacher "
            f"'{teacher.spec.family}': choose one of {', '.join(allowed)}"
        )
    calling = getattr(teacher, "student_calling", "teacher")
    lora = None
    if lora_rank is not None:
        if from_scratch:
            raise UserError(
                "student.from_scratch trains new weights: a LoRA (student.lora_rank) adapts the teacher's"
            )
        if preset != "full" or keep_blocks is not None:
            raise UserError(
                f"student.lora_rank adapts the whole teacher network: it does not combine with preset {preset!r}"
            )
        if lora_rank < 1:
            raise UserError(f"student.lora_rank must be a positive rank, got {lora_rank}")
        lora = {"rank": lora_rank, "alpha": float(lora_alpha or lora_rank), "targets": list(lora_targets)}
        network = lora_copy(source, lora)  # the teacher's tensors, new layers
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in source.parameters())
        copied = total = len(source.state_dict())
        record: dict[str, Any] = {"preset": "full", "lora_parameters": trainable, "frozen_parameters": frozen}
    elif from_scratch:  # the same (pruned) architecture, initialised as its class does: the ablation
        config = (
            prune(source, preset, keep_blocks)[0]
            if preset != "full" or keep_blocks is not None
            else source.config
        )
        network = new_network(lambda: type(source).from_config(config)).float()
        copied, total = 0, len(network.state_dict())
        record = {"preset": preset, "from_scratch": True}
    elif preset == "full" and keep_blocks is None:
        network = copy_network(source).float().train().requires_grad_(True)
        copied = total = len(network.state_dict())
        record = {"preset": "full"}
    else:
        config, teacher_key, removed = prune(source, preset, keep_blocks)
        network = new_network(lambda: type(source).from_config(config)).float()
        copied, total, missed = copy_weights(network, source, teacher_key, load=not copies_are_empty())
        record = {"preset": preset, **removed, "left_at_init": missed[:20]}
    record.update(copied=copied, total=total, teacher_class=class_reference(source))
    student = TeacherNetwork.around(
        network, teacher.spec, prediction, calling=calling, source=record, lora=lora
    )
    student.bind(family_call(teacher))
    note = (
        ""
        if prediction == teacher.spec.prediction_type
        else (f"; its output is read as {prediction}, the teacher's was {teacher.spec.prediction_type}")
    )
    what = (
        f"LoRA rank {lora_rank} on the teacher's {type(source).__name__} (shared, frozen): "
        f"{record['lora_parameters']:,} trainable, {record['frozen_parameters']:,} frozen parameters"
        if lora
        else f"copied {copied} of {total} tensors from the teacher's {type(source).__name__}"
        + (" (student.from_scratch: its architecture, new weights)" if from_scratch else "")
    )
    print(f"student 'teacher' ({preset}): {what}{note}", file=sys.stderr)
    return student


def bind_run_student(student: nn.Module, original: Callable[[], Any]) -> nn.Module:
    """Bind a loaded run's teacher-network student (or a one-step generator's backbone) to its original
    teacher, built on first call, when its family calls the network with its own code."""
    network = getattr(student, "backbone", student)
    if not isinstance(network, TeacherNetwork):
        return student
    if network.is_lora:  # only the adapters were saved: the base is the original teacher's network
        teacher = original()
        network.attach_base(teacher.denoiser())
        network.bind(family_call(teacher))
    elif network.config.calling != "diffusers":
        network.bind(family_call(original))
    return student


def describe_source(student: nn.Module) -> dict[str, Any]:
    """What a teacher-network student was made from (run.json's ``student_config``)."""
    network = getattr(student, "backbone", student)
    return public_config(network.config) if isinstance(network, TeacherNetwork) else {}
