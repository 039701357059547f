"""The compatibility matrix: every teacher family x student x method, built tiny and trained one step.

A pair either works (one real training step on CPU, finite loss, gradients reach the student) or
is refused with the one-line reason the code itself gives; nothing is silently degraded.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.hookspecs import TINY_STUDENT_PRESET

# Small method settings so one step takes well under a second with a T = 20 tiny teacher.
TINY_METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "dkdm": {"rho": 0.1, "pool_init": "ddim", "pool_init_steps": 2},
    "synthetic": {"num_samples": 4, "sampler_steps": 2, "sample_batch": 4},
    "boot": {"num_steps": 4},
    "sid": {},
    "diff-instruct": {},
    "data": {"dataset": "digits"},
}
BATCH = 2


@dataclass
class PairResult:
    teacher: str
    student: str
    method: str
    status: str  # "ok" | "unsupported" | "unavailable" | "error"
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_pair(registry: Any, teacher_family: str, student: str, method: str, workdir: Path) -> PairResult:
    """Build the tiny teacher, the student (preset ``tiny``) and the method, then train one step."""
    import importlib.util

    import torch

    from dkdm_zoo.methods.base import SetupContext
    from dkdm_zoo.testing.tiny_teachers import TINY_TEACHERS

    start = time.perf_counter()
    result = PairResult(teacher_family, student, method, "ok")
    builder, requires = TINY_TEACHERS[teacher_family]
    missing = [m for m in requires if importlib.util.find_spec(m) is None]
    if missing:
        result.status, result.reason = "unavailable", f"needs {', '.join(missing)}"
        return result
    try:
        teacher = builder(workdir, registry)
        torch.manual_seed(0)
        from dkdm_zoo.config.build import create_student

        net = create_student(registry, student, teacher.spec, teacher, default_preset=TINY_STUDENT_PRESET)
        options = TINY_METHOD_OPTIONS.get(method, {})
        algorithm = registry.create("methods", method, teacher, net, **options)
        net = algorithm.student
        algorithm.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), BATCH))
        nets = {name: network.module for name, network in algorithm.networks().items()}
        for update in algorithm.updates():  # one training step: every declared update once, stepped
            for module in nets.values():
                module.zero_grad(set_to_none=True)
            loss, _ = algorithm.update_loss(update.network, nets, BATCH, 0)
            loss.backward()
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss.item()} in update {update.network!r}")
            torch.optim.Adam(nets[update.network].parameters(), lr=1e-3).step()
        # reached, not nonzero: a student that starts as the teacher (`--student teacher`) may have a zero loss
        if not any(p.grad is not None for p in net.parameters()):
            raise RuntimeError("no gradient reached the student")
        if any(p.grad is not None for m in teacher.modules() for p in m.parameters()):
            raise RuntimeError("a gradient reached the teacher")
    except UserError as exc:  # IncompatibleError included: the code's own reason
        result.status, result.reason = "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken pair is reported, not raised
        result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def matrix_pairs(
    registry: Any,
    teachers: list[str] | None = None,
    students: list[str] | None = None,
    methods: list[str] | None = None,
) -> list[tuple[str, str, str]]:
    """The (teacher family, student, method) triples to check: every registered name where none is given."""
    from dkdm_zoo.testing.tiny_teachers import TINY_TEACHERS

    teachers = teachers or list(TINY_TEACHERS)
    unknown = [t for t in teachers if t not in TINY_TEACHERS]
    if unknown:
        raise UserError(
            f"no tiny instance of teacher family {', '.join(unknown)}; known: {', '.join(TINY_TEACHERS)}"
        )
    students = students or [e.name for e in registry.list("students")]
    methods = methods or [e.name for e in registry.list("methods")]
    for name in students:
        registry.get("students", name)
    for name in methods:
        registry.get("methods", name)
    return [(t, s, m) for t in teachers for s in students for m in methods]


def compatibility_matrix(
    registry: Any,
    pairs: list[tuple[str, str, str]],
    progress: Callable[[int], None] | None = None,
) -> list[PairResult]:
    """Each pair checked (``check_pair``) in a temporary folder; ``progress(1)`` after each."""
    results = []
    with tempfile.TemporaryDirectory(prefix="dkdm-zoo-matrix-") as tmp:
        for teacher, student, method in pairs:
            results.append(check_pair(registry, teacher, student, method, Path(tmp)))
            if progress is not None:
                progress(1)
    return results
