"""``check_student``: every built-in passes it, and each way of breaking the contract is caught by name."""

from __future__ import annotations

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

import dkdm_zoo.toolkit as toolkit
from dkdm_zoo.registry import build_registry
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.toolkit import ConditionEmbedding, broadcast_timesteps, check_student
from tests.students.conftest import TINY_SPECS, UNSUPPORTED

REGISTRY = build_registry(entry_points=False)
CLASS_LEARNED = TINY_SPECS["pixel-class-learned"]  # (1, 16, 16), 10 classes, 2 output channels


@pytest.mark.parametrize(
    ("student", "family"),
    [(s, "pixel-class-learned") for s in ("unet", "dit", "convnext")] + [("dit", "text-latent")],
)
def test_builtin_students_pass(student: str, family: str):
    assert family not in UNSUPPORTED[student]
    torch.manual_seed(0)
    check_student(REGISTRY.create("students", student, TINY_SPECS[family], preset="tiny"), TINY_SPECS[family])


class Good(ModelMixin, ConfigMixin):
    """A minimal correct student; the broken ones below each change one thing."""

    @register_to_config
    def __init__(
        self, channels: int = 1, out_channels: int = 2, num_classes: int | None = 10, width: int = 8
    ):
        super().__init__()
        self.cond = ConditionEmbedding(width, num_classes, freq_dim=16)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def labels(self, class_labels: Tensor | None, batch: int) -> Tensor | None:
        return class_labels

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None) -> Tensor:
        t = broadcast_timesteps(timestep, sample.shape[0], sample.device)
        c = self.cond(t, self.labels(class_labels, sample.shape[0]))
        return self.conv_out(torch.relu(self.conv_in(sample) + c[:, :, None, None]))


class NullIsClassZero(Good):
    def labels(self, class_labels, batch):
        return torch.zeros(batch, dtype=torch.long) if class_labels is None else class_labels


class DropsVariance(Good):
    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None) -> Tensor:
        return super().forward(sample, timestep, class_labels)[:, :1]


class TensorTimestepOnly(Good):
    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None) -> Tensor:
        t = timestep if isinstance(timestep, Tensor) and timestep.ndim else torch.zeros(sample.shape[0])
        return super().forward(sample, t.long(), class_labels)


class UnusedLayer(Good):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spare = nn.Linear(4, 4)


class UnregisteredOption(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, channels: int = 1, out_channels: int = 2, num_classes: int | None = 10):
        super().__init__()
        self.inner = Good(channels, out_channels, num_classes)
        self.gain = 1.0

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None) -> Tensor:
        return self.gain * self.inner(sample, timestep, class_labels)


def unregistered(gain: float) -> UnregisteredOption:
    model = UnregisteredOption()
    model.gain = gain  # set after construction, so the saved config cannot rebuild it
    return model


def test_a_correct_minimal_student_passes():
    check_student(Good(), CLASS_LEARNED)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (NullIsClassZero(), "class_labels=None must mean the null label"),
        (DropsVariance(), r"wants \(B, spec.out_channels, H, W\) = \(2, 2, 16, 16\)"),
        (TensorTimestepOnly(), "a scalar timestep"),
        (UnusedLayer(), r"unused by forward.*spare.weight"),
        (unregistered(3.0), "register_to_config"),
    ],
)
def test_each_broken_contract_point_is_named(model: nn.Module, message: str):
    with pytest.raises(AssertionError, match=message):
        check_student(model, CLASS_LEARNED)


def test_a_class_that_cannot_be_imported_is_refused():
    class Local(Good):  # defined in a function: a run could never re-import it
        pass

    with pytest.raises(AssertionError, match="not importable as module:Class"):
        check_student(Local(), CLASS_LEARNED)


def test_not_a_model_mixin_is_refused():
    class Plain(nn.Module):
        pass

    with pytest.raises(AssertionError, match="ModelMixin and ConfigMixin"):
        check_student(Plain(), TeacherSpec(sample_shape=(1, 8, 8)))


def test_toolkit_exports_exist_and_are_documented_where_defined():
    for name in toolkit.__all__:
        obj = getattr(toolkit, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"dkdm_zoo.toolkit.{name} has no docstring"
