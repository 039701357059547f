"""The flow-matching scheduler configs of the modern families, read into one rectified-flow path.

Torch-free. Two readings that ``schedulers.read_schedule`` delegates here:

- ``use_dynamic_shifting`` (FLUX-dev's FlowMatchEulerDiscreteScheduler): the shift depends on the
  image's token count through mu, linear in it between (base_image_seq_len, base_shift) and
  (max_image_seq_len, max_shift), as diffusers' ``calculate_shift``. A family whose sample size is
  fixed gives its token count, and the time shift e^mu / (e^mu + (1/s - 1)) ("exponential"; "linear":
  mu / (mu + (1/s - 1))) is exactly the static shift s' = k s / (1 + (k - 1) s) with k = e^mu (or mu):
  the schedule is recorded as that static shift, the values it came from beside it under
  ``_dynamic_shift``. Without a token count it is refused.
- SANA's ``DPMSolverMultistepScheduler`` with ``prediction_type = "flow_prediction"`` and
  ``use_flow_sigmas = true``: a flow-matching path (velocity prediction, sigma = flow_shift-shifted)
  behind a DPM-Solver class name. Its grid is the scheduler's own (``set_timesteps``); dkdm-zoo
  takes Euler steps on it (not DPM-Solver++'s second-order update).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dkdm_zoo.errors import UserError

#: the sampling grid of FluxPipeline: sigmas np.linspace(1, 1/N, N) passed to set_timesteps
LINSPACE_GRID = "linspace"
#: where a family records which grid its pipeline samples on ("scheduler": set_timesteps(N))
GRID_KEY = "_sampling_sigmas"


def dynamic_shift_mu(values: Mapping[str, Any], image_seq_len: int) -> float:
    """diffusers' ``calculate_shift``: mu linear in the image token count."""
    base_len, max_len = values["base_image_seq_len"], values["max_image_seq_len"]
    base_shift, max_shift = values["base_shift"], values["max_shift"]
    slope = (max_shift - base_shift) / (max_len - base_len)
    return float(image_seq_len * slope + base_shift - slope * base_len)


def resolve_dynamic_shift(values: dict[str, Any], at: str, image_seq_len: int | None) -> dict[str, Any]:
    """A dynamic-shift config at a fixed image token count as the static shift it equals there."""
    if image_seq_len is None:
        raise UserError(
            f"{at}use_dynamic_shifting = true: the shift depends on the image size, which this teacher "
            "family does not fix (the flux family does): use a family that knows its sample size"
        )
    if values["max_image_seq_len"] == values["base_image_seq_len"]:
        raise UserError(f"{at}base_image_seq_len and max_image_seq_len are equal: mu is undefined")
    mu = dynamic_shift_mu(values, image_seq_len)
    shift = math.exp(mu) if values["time_shift_type"] == "exponential" else mu
    if not shift > 0:
        raise UserError(f"{at}the dynamic shift at {image_seq_len} image tokens is {shift}, not > 0")
    return {
        **values,
        "use_dynamic_shifting": False,
        "shift": shift,
        "_dynamic_shift": {"mu": mu, "image_seq_len": int(image_seq_len), "shift": values["shift"]},
    }


#: what a DPM-Solver flow config must hold to be read as a flow-matching path
DPM_FLOW_REQUIRED: dict[str, Any] = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "use_dynamic_shifting": False,
}


def dpm_flow_fields(
    config: Mapping[str, Any], at: str, known_keys: frozenset[str], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The TeacherSpec fields of a DPMSolverMultistepScheduler flow config (SANA); ``defaults``: the
    class's own defaults (what a key the file leaves out takes)."""
    name = str(config["_class_name"])
    given = {k: v for k, v in config.items() if not k.startswith("_")}
    for key, value in given.items():
        if key not in known_keys | {"time_shift_type"}:
            raise UserError(
                f"{at}{key} = {value!r} is a scheduler key dkdm-zoo does not understand; remove it"
            )
    values = {**defaults, **given}
    for key, wanted in DPM_FLOW_REQUIRED.items():
        if values.get(key) != wanted:
            raise UserError(
                f"{at}{key} = {values.get(key)!r}: a {name} flow-matching config is read only with "
                f"{key} = {wanted!r}"
            )
    shift, steps = values.get("flow_shift"), values.get("num_train_timesteps")
    if isinstance(shift, bool) or not isinstance(shift, int | float) or not shift > 0:
        raise UserError(f"{at}flow_shift = {shift!r} is not a number > 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise UserError(f"{at}num_train_timesteps = {steps!r} is not an integer >= 2")
    return {
        "num_train_timesteps": steps,
        "schedule": {"_class_name": name, **given},
        "prediction_type": "flow",
        "variance_type": "fixed_small",
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "process": "flow",
    }
