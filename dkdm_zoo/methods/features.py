"""Feature distillation (BK-SDM): the student's block outputs match the teacher's corresponding blocks.

For students made from the teacher (``--student teacher``: whole, BK-pruned, depth-pruned or LoRA),
whose blocks correspond to the teacher's by construction (``students.pruning.feature_pairs``).
Forward hooks record the outputs of those blocks while armed: the teacher's during the method's
teacher call (the conditional half of a guided batch), the student's during its own forward; the
loss is the sum over pairs of the mean squared difference, as BK-SDM's ``loss_kd_feat``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.students.pruning import feature_pairs
from dkdm_zoo.students.teacher_net import TeacherNetwork


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple | list) else output


class FeatureMatch:
    """Hooks on corresponding blocks of the teacher's network and a teacher-made student."""

    def __init__(self, teacher_network: nn.Module, student: nn.Module):
        network = getattr(student, "backbone", student)
        if not isinstance(network, TeacherNetwork):
            raise UserError(
                "method.feature_weight matches blocks of a student made from the teacher: use --student teacher "
                "(whole, a BK or depth preset, or --lora), or set method.feature_weight=0"
            )
        self.pairs = feature_pairs(network.network, dict(network.config.source or {}))
        self.teacher_features: dict[str, Tensor] = {}
        self.student_features: dict[str, Tensor] = {}
        self._armed: dict[str, int | None] = {"teacher": None, "student": None}
        for teacher_name, student_name in self.pairs:
            teacher_network.get_submodule(teacher_name).register_forward_hook(
                self._hook("teacher", teacher_name)
            )
            network.network.get_submodule(student_name).register_forward_hook(
                self._hook("student", student_name)
            )

    def _hook(self, side: str, name: str) -> Any:
        store = self.teacher_features if side == "teacher" else self.student_features

        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            batch = self._armed[side]
            if batch is not None:
                store[name] = _first(output)[:batch]  # a guided teacher batch is [conditional; null]

        return record

    @contextmanager
    def recording(self, side: str, batch: int) -> Iterator[None]:
        self._armed[side] = batch
        try:
            yield
        finally:
            self._armed[side] = None

    def loss(self) -> Tensor:
        """Sum over pairs of the mean squared difference (teacher features detached), then cleared."""
        terms = []
        for teacher_name, student_name in self.pairs:
            student = self.student_features.get(student_name)
            teacher = self.teacher_features.get(teacher_name)
            if student is None or teacher is None:
                raise RuntimeError(
                    f"feature distillation recorded no output of {teacher_name} / {student_name}"
                )
            terms.append((student.float() - teacher.detach().float().to(student.device)).pow(2).mean())
        self.teacher_features.clear()
        self.student_features.clear()
        return torch.stack(terms).sum()
