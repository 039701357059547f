"""``check_teacher``: the teacher contract as one executable check, for plugin tests and the built-ins.

It fails with an ``AssertionError`` naming the broken point (see CONTRIBUTING.md, "The teacher
contract"), so a teacher plugin's test can call it on what its factory returns.
"""

from __future__ import annotations

import torch

from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Teacher


def check_teacher(teacher: Teacher, *, batch: int = 2) -> None:
    """Assert that ``teacher`` honours the teacher contract.

    Checks: a ``Teacher`` with a ``TeacherSpec``; frozen modules (the factory ends with ``.to(...)``);
    ``model_output`` of shape (B, C or 2C for learned variance, H, W) at integer timesteps in [0, T);
    finite ``predict``; conditions and the null condition for conditional teachers; ``decode``
    giving ``spec.image_shape``.
    """
    name = type(teacher).__name__
    assert isinstance(teacher, Teacher), f"{name} must subclass dkdm_zoo.toolkit.Teacher"
    spec = teacher.spec
    assert isinstance(spec, TeacherSpec), f"{name}.spec must be a TeacherSpec, not {type(spec).__name__}"
    modules = teacher.modules()
    assert isinstance(modules, list | tuple), f"{name}.modules() must return a list of nn.Module"
    trainable = [type(m).__name__ for m in modules if any(p.requires_grad for p in m.parameters())]
    assert not trainable, (
        f"{name}: modules {trainable} are not frozen: end the factory with teacher.to(device)"
    )

    generator = torch.Generator().manual_seed(0)
    cond = teacher.sample_conditions(batch, generator)
    assert (cond is None) == (spec.conditioning == "none"), (
        f"{name}.sample_conditions must return None exactly when spec.conditioning == 'none'"
    )
    if spec.conditioning == "class":
        null = teacher.null_condition(batch)
        assert null is not None and bool((null.labels == spec.num_classes).all()), (
            f"{name}.null_condition must use label index spec.num_classes = {spec.num_classes}"
        )
        assert bool(((cond.labels >= 0) & (cond.labels < spec.num_classes)).all()), (
            f"{name}.sample_conditions must draw labels in [0, {spec.num_classes})"
        )
    x = torch.randn((batch, *spec.sample_shape), generator=generator).to(teacher.device)
    t = torch.linspace(0, spec.num_train_timesteps - 1, batch).round().long().to(teacher.device)
    with torch.no_grad():
        raw = teacher.model_output(x.to(teacher.dtype), t, cond)
        want = (batch, spec.out_channels, *spec.sample_shape[1:])
        assert tuple(raw.shape) == want, (
            f"{name}.model_output returned shape {tuple(raw.shape)}; spec {spec.sample_shape} "
            f"({spec.variance_type}) wants {want}"
        )
        pred = teacher.predict(x, t, cond)
        assert torch.isfinite(pred.eps).all() and torch.isfinite(pred.x0).all(), (
            f"{name}.predict gave non-finite eps/x0"
        )
        images = teacher.decode(x)
    assert tuple(images.shape[1:]) == tuple(spec.image_shape), (
        f"{name}.decode gave images of shape {tuple(images.shape[1:])}, spec.image_shape is {spec.image_shape}"
    )
