"""A diffusers scheduler config read into the noise process it defines: every value checked, never
guessed. Torch-free (diffusers is imported only to read a scheduler class's own defaults).

A config names its scheduler class (``_class_name``). Its keys fall in three groups:

- keys that define the noise process: read, each value checked (``num_train_timesteps``, the betas,
  ``prediction_type``, ``variance_type``, clipping, ``rescale_betas_zero_snr``);
- keys that only steer that class's own sampler (spacing, solver order, Karras sigmas, ...):
  dkdm-zoo samples with its own DDIM/DDPM steps on the same noise process, so they change nothing
  it reads and are knowingly set aside;
- anything else: refused in one line naming the file, the key and the value.

A key the file leaves out takes the named class's own default, as diffusers does when it loads the
folder. A flow-matching (rectified-flow) scheduler is refused in one line rather than read as a
variance-preserving schedule with default betas.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from dkdm_zoo.errors import UserError

#: where a loaded config came from (load_scheduler_config records it), for messages
SOURCE_KEY = "_source_file"

#: scheduler classes over a discrete variance-preserving (DDPM) schedule of betas
VP_SCHEDULERS = frozenset(
    {
        "DDPMScheduler",
        "DDIMScheduler",
        "PNDMScheduler",
        "LMSDiscreteScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
    }
)
#: scheduler classes of a flow-matching (rectified-flow) path x_s = (1 - s) x0 + s eps
FLOW_SCHEDULERS = frozenset(
    {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "FlowMatchLCMScheduler"}
)
#: keys that define the noise process (each read and checked below)
PROCESS_KEYS = frozenset(
    {
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "trained_betas",
        "prediction_type",
        "variance_type",
        "clip_sample",
        "clip_sample_range",
        "rescale_betas_zero_snr",
        "use_flow_sigmas",
    }
)
#: keys that only steer a diffusers sampler over the same noise process
SAMPLER_KEYS = frozenset(
    {
        "set_alpha_to_one",
        "steps_offset",
        "timestep_spacing",
        "skip_prk_steps",
        "thresholding",
        "dynamic_thresholding_ratio",
        "sample_max_value",
        "algorithm_type",
        "solver_order",
        "solver_type",
        "lower_order_final",
        "euler_at_final",
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_lu_lambdas",
        "final_sigmas_type",
        "lambda_min_clipped",
        "interpolation_type",
        "sigma_min",
        "sigma_max",
        "timestep_type",
        "predict_x0",
        "disable_corrector",
        "solver_p",
        "shift_terminal",
        "time_shift_type",
        "use_dynamic_shifting",
        "flow_shift",
    }
)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: diffusers' variance types -> the TeacherSpec's (the *_log variants are the same variances as logs)
VARIANCE_TYPES = {
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
    "fixed_large_log": "fixed_large",
    "learned_range": "learned_range",
}


def read_schedule(
    config: Mapping[str, Any],
    *,
    learned: bool,
    where: Any = "",
    built_as: str | None = None,
    flow: bool = False,
    image_seq_len: int | None = None,
) -> dict[str, Any]:
    """The TeacherSpec fields a scheduler config determines: T, the betas, prediction and variance
    type, clipping. ``learned``: the network outputs IDDPM's variance interpolation (2C channels).
    ``built_as``: the class a config built in code (no ``_class_name``, not read from a file) holds
    the keyword arguments of; a file must name its class. ``flow``: the family reads flow-matching
    teachers (their network takes s T as its timestep and predicts the velocity). ``image_seq_len``:
    the image token count of a family whose sample size is fixed (FLUX), which resolves a
    resolution-dependent shift (``use_dynamic_shifting``) to the one shift it is at that size."""
    config = dict(config)
    at = _where(config, where)
    name = config.get("_class_name")
    if name is None and built_as is not None and SOURCE_KEY not in config:
        name = config["_class_name"] = built_as
    if not isinstance(name, str) or not name:
        raise UserError(
            f"{at}names no scheduler class (_class_name): cannot tell which noise schedule it is; save the "
            "scheduler with diffusers' save_pretrained"
        )
    if name == "FlowMatchEulerDiscreteScheduler":
        if not flow:
            raise UserError(
                f"{at}{name} is a flow-matching (rectified-flow) schedule, which this teacher family does "
                "not read (the `ddpm-unet` family does, for UNet2DModel folders): refused rather than misread"
            )
        return _flow_fields(config, at, image_seq_len)
    if flow and name == "DPMSolverMultistepScheduler" and config.get("use_flow_sigmas") is True:
        from dkdm_zoo.teachers.flow_schedulers import dpm_flow_fields

        return dpm_flow_fields(config, at, PROCESS_KEYS | SAMPLER_KEYS, _class_defaults(name))
    if (
        name in FLOW_SCHEDULERS
        or config.get("use_flow_sigmas") is True
        or config.get("prediction_type") == "flow_prediction"
    ):
        raise UserError(
            f"{at}{name} is a flow-matching (rectified-flow) schedule that dkdm-zoo does not read yet "
            "(FlowMatchEulerDiscreteScheduler it does): refused rather than misread"
        )
    if name not in VP_SCHEDULERS:
        raise UserError(
            f"{at}_class_name = {name!r} is a scheduler dkdm-zoo does not read; supported: "
            f"{', '.join(sorted(VP_SCHEDULERS))}"
        )
    for key in config:
        if not key.startswith("_") and key not in PROCESS_KEYS | SAMPLER_KEYS | {"predict_epsilon"}:
            raise UserError(
                f"{at}{key} = {config[key]!r} is a scheduler key dkdm-zoo does not understand; remove it, "
                "or report it if your teacher needs it"
            )
    values = {**_class_defaults(name), **{k: v for k, v in config.items() if not k.startswith("_")}}
    if "prediction_type" not in config and "predict_epsilon" in config:  # diffusers < 0.10
        values["prediction_type"] = "epsilon" if config["predict_epsilon"] else "sample"

    T = values.get("num_train_timesteps")
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise UserError(f"{at}num_train_timesteps = {T!r} is not an integer >= 2")
    schedule = _betas(values, at, T)
    prediction = values.get("prediction_type")
    if prediction not in PREDICTION_TYPES:
        raise UserError(f"{at}prediction_type = {prediction!r} is not one of {', '.join(PREDICTION_TYPES)}")
    zero_snr = values.get("rescale_betas_zero_snr", False)
    if not isinstance(zero_snr, bool):
        raise UserError(f"{at}rescale_betas_zero_snr = {zero_snr!r} is not true or false")
    if zero_snr:
        if prediction != "v_prediction":
            raise UserError(
                f"{at}rescale_betas_zero_snr = true (a zero terminal SNR schedule) with prediction_type = "
                f"{prediction!r}: its last step has no signal, which only a v_prediction network can invert"
            )
        schedule = {**schedule, **zero_snr_betas(schedule, T)}
    schedule.update(_sampler_record(values, _class_defaults(name), at))
    variance = values.get("variance_type")
    if learned:
        if variance not in (None, "learned_range", "fixed_small", "fixed_small_log"):
            raise UserError(
                f"{at}variance_type = {variance!r} but the network outputs a learned variance (2C channels): "
                "expected learned_range"
            )
        variance_type = "learned_range"
    elif variance is None or variance in VARIANCE_TYPES:
        variance_type = VARIANCE_TYPES.get(variance or "fixed_small", "fixed_small")
        if variance_type == "learned_range":
            raise UserError(
                f"{at}variance_type = 'learned_range' but the network outputs no variance channels: the "
                "scheduler and the model disagree"
            )
    else:
        raise UserError(
            f"{at}variance_type = {variance!r} is not supported; supported: {', '.join(VARIANCE_TYPES)}"
            + (
                " ('learned' is a raw log variance, not IDDPM's interpolation)"
                if variance == "learned"
                else ""
            )
        )
    clip = values.get("clip_sample", False)
    if not isinstance(clip, bool):
        raise UserError(f"{at}clip_sample = {clip!r} is not true or false")
    clip_range = values.get("clip_sample_range", 1.0)
    if isinstance(clip_range, bool) or not isinstance(clip_range, int | float) or not clip_range > 0:
        raise UserError(f"{at}clip_sample_range = {clip_range!r} is not a number > 0")
    return {
        "num_train_timesteps": T,
        "schedule": schedule,
        "prediction_type": prediction,
        "variance_type": variance_type,
        "clip_sample": clip,
        "clip_sample_range": float(clip_range),
    }


#: FlowMatchEulerDiscreteScheduler keys and what each must hold to be read; the sampling grid is the
#: scheduler's own, rebuilt from these, so its spacing and sigma options are honoured as they are
FLOW_KEYS: dict[str, Any] = {
    "num_train_timesteps": "int",
    "shift": "positive",
    "use_dynamic_shifting": "bool",  # resolution-dependent shift (FLUX-dev): needs the image size
    "base_shift": "number",
    "max_shift": "number",
    "base_image_seq_len": "int",
    "max_image_seq_len": "int",
    "invert_sigmas": False,
    "shift_terminal": "number-or-none",
    "use_karras_sigmas": "bool",
    "use_exponential_sigmas": "bool",
    "use_beta_sigmas": "bool",
    "time_shift_type": ("exponential", "linear"),
    "stochastic_sampling": "bool",
}
_RULES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2"),
    "positive": (lambda v: _number(v) and v > 0, "a number > 0"),
    "number": (lambda v: _number(v), "a number"),
    "number-or-none": (lambda v: v is None or _number(v), "a number or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _flow_fields(config: Mapping[str, Any], at: str, image_seq_len: int | None = None) -> dict[str, Any]:
    name = str(config["_class_name"])
    values = {**_class_defaults(name), **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key, value in values.items():
        if key not in FLOW_KEYS:
            raise UserError(
                f"{at}{key} = {value!r} is a scheduler key dkdm-zoo does not understand; remove it"
            )
        rule = FLOW_KEYS[key]
        if isinstance(rule, str):
            check, wanted = _RULES[rule]
        elif isinstance(rule, tuple):
            check, wanted = (lambda v, r=rule: v in r), f"one of {', '.join(map(repr, rule))}"
        else:
            check, wanted = (lambda v, r=rule: v is r), f"{rule!r} (the only value supported yet)"
        if not check(value):
            raise UserError(f"{at}{key} = {value!r} is not {wanted}")
    if values["use_dynamic_shifting"]:
        from dkdm_zoo.teachers.flow_schedulers import resolve_dynamic_shift

        values = resolve_dynamic_shift(values, at, image_seq_len)
    return {
        "num_train_timesteps": values["num_train_timesteps"],
        "schedule": {"_class_name": name, **values},
        "prediction_type": "flow",
        "variance_type": "fixed_small",
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "process": "flow",
    }


def _betas(values: Mapping[str, Any], at: str, T: int) -> dict[str, Any]:
    trained = values.get("trained_betas")
    if trained is not None:
        if not isinstance(trained, list | tuple) or len(trained) != T:
            raise UserError(f"{at}trained_betas must be a list of num_train_timesteps = {T} numbers")
        for beta in trained:
            if not _number(beta) or not 0 < beta <= 1:
                raise UserError(f"{at}trained_betas holds {beta!r}: every beta must be a number in (0, 1]")
        return {"trained_betas": [float(b) for b in trained]}
    kind = values.get("beta_schedule")
    if kind not in BETA_SCHEDULES:
        raise UserError(f"{at}beta_schedule = {kind!r} is not one of {', '.join(BETA_SCHEDULES)}")
    schedule: dict[str, Any] = {"beta_schedule": kind}
    if kind != "squaredcos_cap_v2":  # the cosine schedule has no start and end
        for key in ("beta_start", "beta_end"):
            value = values.get(key)
            if not _number(value) or not 0 < value < 1:
                raise UserError(f"{at}{key} = {value!r} is not a number in (0, 1)")
            schedule[key] = float(value)
        if schedule["beta_start"] > schedule["beta_end"]:
            raise UserError(
                f"{at}beta_start = {schedule['beta_start']} is above beta_end = {schedule['beta_end']}: "
                "noise must grow along the schedule"
            )
    return schedule


#: the terminal alpha_bar of a zero-SNR schedule, as diffusers' EulerDiscreteScheduler sets it ("close to
#: 0 without being 0"): the chain's eps parameterisation (students, DDIM) stays finite at t = T - 1
ZERO_SNR_FLOOR = 2.0**-24
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def zero_snr_betas(schedule: Mapping[str, Any], T: int) -> dict[str, Any]:
    """The schedule's betas rescaled to zero terminal SNR (diffusers' ``rescale_zero_terminal_snr``),
    with the last alpha_bar floored at ``ZERO_SNR_FLOOR``, as ``trained_betas`` (what every reader of
    the spec, the exported DDPMScheduler included, builds exactly) plus the flag, for the record."""
    import torch
    from diffusers import DDPMScheduler

    betas = DDPMScheduler(num_train_timesteps=T, rescale_betas_zero_snr=True, **schedule).betas.double()
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    betas[-1] = 1.0 - ZERO_SNR_FLOOR / alphas_cumprod[-2]
    return {"rescale_betas_zero_snr": True, "trained_betas": betas.tolist()}


def _sampler_record(values: Mapping[str, Any], defaults: Mapping[str, Any], at: str) -> dict[str, Any]:
    """The teacher's own sampler spacing, checked, and kept in the spec (run.json) where it is not the
    named class's default (a config may be completed with those defaults before it is read);
    dkdm-zoo's sampler walks "trailing" timesteps whatever it says."""
    record: dict[str, Any] = {}
    spacing = values.get("timestep_spacing")
    if spacing is not None and spacing not in TIMESTEP_SPACINGS:
        raise UserError(f"{at}timestep_spacing = {spacing!r} is not one of {', '.join(TIMESTEP_SPACINGS)}")
    offset = values.get("steps_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise UserError(f"{at}steps_offset = {offset!r} is not an integer >= 0")
    if spacing is not None and spacing != defaults.get("timestep_spacing"):
        record["timestep_spacing"] = spacing
    return record


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _class_defaults(name: str) -> dict[str, Any]:
    """The named diffusers scheduler class's own defaults (what loading the folder would use)."""
    import diffusers

    signature = inspect.signature(getattr(diffusers, name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name != "self" and p.default is not inspect.Parameter.empty
    }


def _where(config: Mapping[str, Any], where: Any) -> str:
    source = config.get(SOURCE_KEY)
    label = str(source) if source else str(where)
    return f"{label}: " if label else ""
