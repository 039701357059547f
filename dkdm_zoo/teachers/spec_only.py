"""`spec`: a teacher that is only a TeacherSpec, with no network.

It lets `data` training (the reference teachers, the data-trained baseline) pick its student's
shape, schedule and conditioning through the same recipe keys as any distillation.
"""

from __future__ import annotations

from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import PositiveFloat
from dkdm_zoo.spec import Conditioning, PredictionType, Process, TeacherSpec, VarianceType
from dkdm_zoo.teachers.base import Condition, Teacher

NO_NETWORK = "the 'spec' teacher has no network: use it only with method 'data' (training on real data)"


class SpecTeacher(Teacher):
    """Shape, schedule and conditioning only; asking it for a prediction is a user error."""

    def modules(self) -> list[nn.Module]:
        return []

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        raise UserError(NO_NETWORK)

    def denoiser(self) -> nn.Module:
        raise UserError(NO_NETWORK)


def load(
    sample_shape: tuple[int, int, int] = (1, 8, 8),
    conditioning: Conditioning = "none",
    num_classes: int | None = None,
    num_train_timesteps: int = 1000,
    process: Process = "vp",
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    shift: PositiveFloat = 1.0,
    prediction_type: PredictionType | None = None,
    variance_type: VarianceType = "fixed_small",
    clip_sample: bool | None = None,
) -> SpecTeacher:
    """``process = "vp"``: a DDPM schedule of betas (eps prediction unless ``prediction_type`` says
    otherwise, x0 clipped unless ``clip_sample`` is false); ``"flow"``: a rectified-flow path with
    FlowMatchEuler's ``shift`` (velocity prediction, no clipping), its fields read like a saved
    FlowMatchEulerDiscreteScheduler's."""
    from dkdm_zoo.teachers.schedulers import read_schedule

    if process == "flow":
        if prediction_type not in (None, "flow"):
            raise UserError(
                f"teacher 'spec': a flow path predicts the velocity, not prediction_type={prediction_type!r}"
            )
        scheduler = {
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": num_train_timesteps,
        }
        fields = read_schedule(
            {**scheduler, "shift": shift}, learned=False, where="teacher 'spec'", flow=True
        )
    else:
        fields = {
            "num_train_timesteps": num_train_timesteps,
            "schedule": {"beta_schedule": beta_schedule, "beta_start": beta_start, "beta_end": beta_end},
            "prediction_type": prediction_type or "epsilon",
            "variance_type": variance_type,
            "clip_sample": True if clip_sample is None else clip_sample,
        }
    try:
        spec = TeacherSpec(
            sample_shape=tuple(int(v) for v in sample_shape),  # type: ignore[arg-type]
            conditioning=conditioning,  # type: ignore[arg-type]
            num_classes=num_classes,
            family="spec",
            **fields,
        )
    except (ValueError, TypeError) as exc:
        raise UserError(f"teacher 'spec': {exc}") from None
    return SpecTeacher(spec)
