"""Every registered student x every tiny teacher family: builds, runs forward/backward, or refuses."""

from __future__ import annotations

import pytest
import torch

from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.registry import build_registry
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import count_parameters, describe_student, example_inputs
from tests.students.conftest import TINY_SPECS, UNSUPPORTED

REGISTRY = build_registry(entry_points=False)
STUDENTS = [entry.name for entry in REGISTRY.list("students")]
PAIRS = [(s, f) for s in STUDENTS for f in TINY_SPECS]


def make(name: str, spec: TeacherSpec, **overrides):
    torch.manual_seed(0)
    return REGISTRY.create("students", name, spec, preset="tiny", **overrides)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move zero-initialised layers (adaLN-Zero, FiLM) off zero so every input path shows in the output."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_builtins_are_registered():
    assert {"unet", "dit", "convnext"} <= set(STUDENTS)
    assert all(
        REGISTRY.get("students", s).plugin == "dkdm_zoo.students.plugin" for s in ("unet", "dit", "convnext")
    )


@pytest.mark.parametrize(("student", "family"), PAIRS)
def test_student_fits_or_refuses(student: str, family: str):
    check_fits_or_refuses(REGISTRY, student, family)


def check_fits_or_refuses(registry, student: str, family: str) -> None:
    """Refused with a one-line IncompatibleError where listed so; otherwise trains as the contract says."""
    assert student in UNSUPPORTED, (
        f"state which families student '{student}' supports in conftest.UNSUPPORTED"
    )
    spec = TINY_SPECS[family]
    torch.manual_seed(0)
    if family in UNSUPPORTED[student]:
        with pytest.raises(IncompatibleError) as info:
            registry.create("students", student, spec, preset="tiny")
        message = str(info.value)
        assert student in message and "\n" not in message
        return

    model = registry.create("students", student, spec, preset="tiny")
    assert count_parameters(model) < 200_000, "the tiny preset must stay tiny"
    inputs = example_inputs(spec, batch=3)
    out = model(**inputs)
    assert out.shape == (3, spec.out_channels, *spec.sample_shape[1:])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()

    # Every parameter is in the graph, and a few optimiser steps give every tensor a nonzero
    # gradient (zero-initialised layers such as adaLN-Zero gates open after the first step).
    target = torch.randn_like(out)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reached = {name: False for name, _ in model.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(**inputs), target).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} is not used by forward"
            reached[name] |= bool(p.grad.abs().sum() > 0)
        opt.step()
    assert [n for n, ok in reached.items() if not ok] == []


@pytest.mark.parametrize("student", ["unet", "dit", "convnext"])
def test_timestep_forms_and_null_label(student: str):
    spec = TINY_SPECS["latent-class"]
    model = perturbed(make(student, spec))
    x = torch.randn(2, *spec.sample_shape)
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        ref = model(x, torch.tensor([17, 17]), labels)
        assert torch.equal(model(x, 17, labels), ref)
        assert torch.equal(model(x, torch.tensor(17), labels), ref)
        null = model(x, torch.tensor([5, 900]), torch.full((2,), spec.num_classes))
        assert torch.equal(model(x, torch.tensor([5, 900]), None), null)  # None means the null label
        # the condition and the timestep both change the output
        assert not torch.allclose(model(x, torch.tensor([17, 17]), torch.tensor([2, 4])), ref)
        assert not torch.allclose(model(x, torch.tensor([400, 400]), labels), ref)


@pytest.mark.parametrize("student", ["unet", "dit"])
def test_text_changes_output(student: str):
    spec = TINY_SPECS["text-latent"]
    model = perturbed(make(student, spec))
    with torch.no_grad():
        inputs = example_inputs(spec, batch=2)
        ref = model(**inputs)
        other = dict(inputs, encoder_hidden_states=torch.randn_like(inputs["encoder_hidden_states"]))
        assert not torch.allclose(model(**other), ref)


@pytest.mark.parametrize("student", ["unet", "dit", "convnext"])
def test_non_square_samples_are_refused(student: str):
    with pytest.raises(IncompatibleError, match="square|divisible"):
        make(student, TeacherSpec(sample_shape=(1, 8, 16)))


@pytest.mark.parametrize(
    ("student", "overrides", "pattern"),
    [
        ("unet", {"block_out_channels": (8, 16, 16, 16)}, "cannot go through 4 levels"),
        ("convnext", {"widths": (8, 16, 16)}, "cannot go through 3 levels"),
        ("dit", {"patch_size": 3}, "not divisible into 3x3 patches"),
    ],
)
def test_resolution_the_architecture_cannot_take(student: str, overrides: dict, pattern: str):
    with pytest.raises(IncompatibleError, match=pattern):
        make(student, TINY_SPECS["pixel-uncond"], **overrides)


def test_preset_cuts_levels_to_the_resolution():
    unet8 = make("unet", TeacherSpec(sample_shape=(1, 8, 8)))
    unet32 = make("unet", TeacherSpec(sample_shape=(1, 32, 32)))
    assert tuple(unet8.config.block_out_channels) == (16, 24)  # 8 -> 4, the smallest map allowed
    assert tuple(unet32.config.block_out_channels) == (16, 24, 24)
    convnext28 = make("convnext", TeacherSpec(sample_shape=(1, 28, 28)))
    assert tuple(convnext28.config.widths) == (16, 32, 32)  # 28 -> 14 -> 7
    assert make("convnext", TeacherSpec(sample_shape=(1, 28, 28))).config.sample_size == 28


def test_overrides_and_user_errors():
    spec = TINY_SPECS["pixel-uncond"]
    model = make("dit", spec, depth=3, hidden_size=48, num_heads=3)
    assert (model.config.depth, model.config.hidden_size, len(model.blocks)) == (3, 48, 3)
    assert tuple(make("unet", spec, block_out_channels=[8, 16]).config.block_out_channels) == (
        8,
        16,
    )  # TOML lists
    with pytest.raises(UserError, match="no preset 'huge'.*tiny, small, base"):
        REGISTRY.create("students", "unet", spec, preset="huge")
    with pytest.raises(UserError, match="no option 'depthh'.*depth"):
        make("dit", spec, depthh=3)
    with pytest.raises(UserError, match="num_heads=5 must divide"):
        make("dit", spec, num_heads=5)
    with pytest.raises(UserError, match="norm_num_groups"):
        make("unet", spec, norm_num_groups=7)


def test_describe_student_reports_measured_shapes():
    spec = TINY_SPECS["pixel-class-learned"]
    info = describe_student(spec, "convnext", "tiny", registry=REGISTRY, depth=2)
    assert info["parameters"] == count_parameters(make("convnext", spec, depth=2))
    assert info["output"] == ["B", 2, 16, 16]
    assert info["inputs"] == {"sample": ["B", 1, 16, 16], "timestep": ["B"], "class_labels": ["B"]}
    assert info["config"]["depth"] == 2 and info["overrides"] == {"depth": 2}
    text = describe_student(TINY_SPECS["text-latent"], "dit", "tiny", registry=REGISTRY)
    assert text["inputs"]["encoder_hidden_states"] == ["B", 8, 32]
