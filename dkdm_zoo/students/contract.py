"""``check_student``: the student contract as one executable check, for plugin tests and the built-ins.

It fails with an ``AssertionError`` naming the broken point of the contract (see CONTRIBUTING.md,
"The student contract"), so a plugin's test suite can call it on every teacher spec it supports.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import ConfigMixin, ModelMixin
from torch import nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.classes import resolve_model_class
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import example_inputs


def check_student(model: nn.Module, spec: TeacherSpec, *, batch: int = 2) -> None:
    """Assert that ``model`` (built for ``spec``) honours the student contract.

    Checks: a diffusers ``ModelMixin`` + ``ConfigMixin`` importable as ``module:Class``; a plain tensor
    of shape (B, spec.out_channels, H, W) for integer timesteps anywhere in [0, T); a scalar timestep
    means the same timestep for every sample; ``class_labels=None`` is the null label (index
    num_classes); every parameter is used by forward (DDP needs it); ``save_pretrained`` then
    ``from_pretrained`` gives the same outputs.
    """
    cls = type(model)
    name = f"{cls.__module__}:{cls.__qualname__}"
    assert isinstance(model, ModelMixin) and isinstance(model, ConfigMixin), (
        f"{name} must subclass diffusers ModelMixin and ConfigMixin (save_pretrained / from_pretrained)"
    )
    try:
        importable = resolve_model_class(name, where="check_student") is cls
    except UserError:
        importable = False
    assert importable, (
        f"{name} is not importable as module:Class: define the class at the top level of an installed module"
    )
    model = model.eval()
    inputs = example_inputs(spec, batch=batch)
    T = spec.num_train_timesteps
    inputs["timestep"] = torch.linspace(0, T - 1, batch).round().long()  # both ends of [0, T)
    want = (batch, spec.out_channels, *spec.sample_shape[1:])
    with torch.no_grad():
        out = model(**inputs)
        assert isinstance(out, torch.Tensor), (
            f"{name}.forward must return a plain Tensor, not {type(out).__name__}"
        )
        assert tuple(out.shape) == want, (
            f"{name}.forward returned shape {tuple(out.shape)}, the contract wants (B, spec.out_channels, H, W) = {want}"
        )
        assert torch.isfinite(out).all(), f"{name}.forward returned non-finite values"

        same_t = dict(inputs, timestep=torch.full((batch,), T // 2))
        ref = model(**same_t)
        for scalar in (T // 2, torch.tensor(T // 2)):
            assert torch.allclose(model(**dict(inputs, timestep=scalar)), ref, atol=1e-5), (
                f"{name}: a scalar timestep ({type(scalar).__name__}) must mean that timestep for every sample"
            )
        if spec.conditioning == "class":
            null = dict(inputs, class_labels=torch.full((batch,), spec.num_classes))
            assert torch.allclose(model(**dict(inputs, class_labels=None)), model(**null), atol=1e-5), (
                f"{name}: class_labels=None must mean the null label (index spec.num_classes = {spec.num_classes})"
            )

    model.zero_grad(set_to_none=True)
    model(**inputs).float().square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{name}: parameters unused by forward (multi-GPU training fails): {unused[:5]}"
    model.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        model.save_pretrained(folder, safe_serialization=True)
        loaded = cls.from_pretrained(folder).eval()
        assert torch.allclose(loaded(**inputs), model(**inputs), atol=1e-5), (
            f"{name}: from_pretrained(save_pretrained(model)) gives different outputs: "
            "every constructor argument must be registered with @register_to_config"
        )
