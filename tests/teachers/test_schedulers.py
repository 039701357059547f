"""Schedules are read, never guessed: real configs give diffusers' own betas, and a class, key or
value the reader does not understand is refused in one line naming the file and the key."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    UNet2DModel,
)
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.diffusion.flow import FlowSchedule
from dkdm_zoo.diffusion.schedule import NoiseSchedule
from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.schedulers import SOURCE_KEY, read_schedule
from dkdm_zoo.testing.hub_configs import DDPM_CIFAR10_SCHEDULER as CIFAR_SCHEDULER
from dkdm_zoo.testing.hub_configs import DIT_SCHEDULER, SD_SCHEDULER
from dkdm_zoo.testing.tiny_teachers import tiny_unet


@pytest.mark.parametrize(
    ("config", "cls"),
    [(CIFAR_SCHEDULER, DDPMScheduler), (DIT_SCHEDULER, DDIMScheduler), (SD_SCHEDULER, PNDMScheduler)],
)
def test_real_configs_give_diffusers_own_betas(config, cls):
    fields = read_schedule(config, learned=False)
    spec = TeacherSpec(sample_shape=(3, 8, 8), **fields)
    ours = NoiseSchedule.from_spec(spec).betas.float()
    torch.testing.assert_close(ours, cls.from_config(config).betas.float())
    assert fields["prediction_type"] == "epsilon"
    assert fields["variance_type"] == ("fixed_large" if config is CIFAR_SCHEDULER else "fixed_small")
    assert fields["clip_sample"] is (config is CIFAR_SCHEDULER)


def test_keys_a_file_leaves_out_take_the_named_classes_defaults():
    fields = read_schedule({"_class_name": "DDIMScheduler"}, learned=False)
    ddim = DDIMScheduler()
    assert fields["num_train_timesteps"] == ddim.config.num_train_timesteps
    assert fields["schedule"] == {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
    assert fields["clip_sample"] is ddim.config.clip_sample  # DDIM clips by default, DDPM too
    learned = read_schedule({"_class_name": "DDIMScheduler"}, learned=True)
    assert learned["variance_type"] == "learned_range"


BAD = [
    ({"beta_schedule": "cosine"}, "beta_schedule = 'cosine' is not one of"),
    ({"beta_start": -0.1}, "beta_start = -0.1 is not a number in (0, 1)"),
    ({"beta_start": "abc"}, "beta_start = 'abc' is not a number in (0, 1)"),
    ({"beta_end": 1.5}, "beta_end = 1.5 is not a number in (0, 1)"),
    ({"beta_start": 0.03}, "beta_start = 0.03 is above beta_end = 0.02"),
    ({"num_train_timesteps": "1000"}, "num_train_timesteps = '1000' is not an integer >= 2"),
    ({"num_train_timesteps": 0}, "num_train_timesteps = 0 is not an integer >= 2"),
    ({"num_train_timesteps": True}, "num_train_timesteps = True is not an integer >= 2"),
    ({"num_train_timesteps": 3, "trained_betas": [0.1, 0.0, 0.2]}, "trained_betas holds 0.0"),
    ({"trained_betas": [0.1, 0.2]}, "trained_betas must be a list of num_train_timesteps = 1000"),
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr = true (a zero terminal SNR schedule) with"),
    ({"rescale_betas_zero_snr": "yes"}, "rescale_betas_zero_snr = 'yes' is not true or false"),
    ({"timestep_spacing": "middle"}, "timestep_spacing = 'middle' is not one of leading, trailing, linspace"),
    ({"steps_offset": -1}, "steps_offset = -1 is not an integer >= 0"),
    ({"variance_type": "fixed_medium"}, "variance_type = 'fixed_medium' is not supported"),
    ({"variance_type": "learned"}, "variance_type = 'learned' is not supported"),
    ({"variance_type": "learned_range"}, "the scheduler and the model disagree"),
    ({"clip_sample": "yes"}, "clip_sample = 'yes' is not true or false"),
    ({"clip_sample_range": -1}, "clip_sample_range = -1 is not a number > 0"),
    ({"prediction_type": "flow"}, "prediction_type = 'flow' is not one of"),
    ({"beta_sheduler": "linear"}, "beta_sheduler = 'linear' is a scheduler key dkdm-zoo does not understand"),
    (
        {"_class_name": "KarrasVeScheduler"},
        "_class_name = 'KarrasVeScheduler' is a scheduler dkdm-zoo does not",
    ),
    (
        {"_class_name": "FlowMatchEulerDiscreteScheduler"},
        "FlowMatchEulerDiscreteScheduler is a flow-matching",
    ),
    (
        {"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "flow_prediction"},
        "DPMSolverMultistepScheduler is a flow-matching",
    ),
    ({"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True}, "is a flow-matching"),
]


@pytest.mark.parametrize(("change", "needle"), BAD, ids=[str(c) for c, _ in BAD])
def test_a_value_the_reader_does_not_understand_is_refused_naming_file_and_key(change, needle):
    config = {**CIFAR_SCHEDULER, **change, SOURCE_KEY: "/models/t/scheduler_config.json"}
    with pytest.raises(UserError) as info:
        read_schedule(config, learned=False)
    message = str(info.value)
    assert message.startswith("/models/t/scheduler_config.json: ") and "\n" not in message
    assert needle in message, message


def test_a_file_must_name_its_class():
    with pytest.raises(UserError, match="names no scheduler class"):
        read_schedule(
            {"beta_schedule": "linear", SOURCE_KEY: "f.json"}, learned=False, built_as="DDPMScheduler"
        )


def flow_folder(path, **scheduler):
    """A flat rectified-flow teacher as diffusers saves one: a UNet2DModel and a FlowMatchEuler scheduler."""
    tiny_unet(1).save_pretrained(path)
    FlowMatchEulerDiscreteScheduler(**scheduler).save_pretrained(path)
    return path


def diffusers_flow_loop(folder, noise, steps: int):
    """The reference: diffusers' own FlowMatchEuler loop over the folder's UNet2DModel and scheduler."""
    unet = UNet2DModel.from_pretrained(folder, use_safetensors=True).eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder)
    scheduler.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


def test_flow_path_conversions_are_the_closed_forms():
    schedule = FlowSchedule({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000})
    x0, eps = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randn(4, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.0, 250.0, 999.5, 1000.0])  # s = 1 (pure noise) included
    x_t = schedule.add_noise(x0, eps, t)
    s = (t / 1000).reshape(-1, 1, 1, 1).double()
    torch.testing.assert_close(x_t, (1 - s) * x0 + s * eps)
    got_eps, got_x0 = schedule.to_eps_x0(eps - x0, x_t, t, "flow")
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)


def test_a_flat_flow_folder_is_a_flow_teacher_sampled_by_its_own_scheduler(tmp_path):
    """The silent misread this reader exists for: a FlowMatchEuler scheduler beside a UNet2DModel was
    sampled as a linear-beta epsilon model (FD 64, exit 0). Now it is read as the flow teacher it is,
    and dkdm-zoo's Euler steps equal diffusers' own FlowMatchEulerDiscreteScheduler loop."""
    folder = flow_folder(tmp_path / "flow", shift=3.0)
    registry = build_registry(entry_points=False)
    teacher = registry.create("teachers", "ddpm-unet", path=str(folder))
    spec = teacher.spec
    assert (spec.process, spec.prediction_type, spec.num_train_timesteps) == ("flow", "flow", 1000)
    assert spec.schedule["shift"] == 3.0
    noise = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    ours = teacher.sample(3, steps=4, noise=noise)

    torch.testing.assert_close(ours, diffusers_flow_loop(folder, noise, 4), rtol=1e-4, atol=1e-4)
    stochastic = teacher.sample(
        3, steps=4, sampler="ddpm", noise=noise, generator=torch.Generator().manual_seed(1)
    )
    assert (stochastic - ours).abs().max() > 1e-3 and torch.isfinite(stochastic).all()


def test_flow_teachers_sample_from_the_cli_and_every_method_plans_them(tmp_path):
    folder = flow_folder(tmp_path / "flow", shift=3.0)
    app = create_app(build_registry(entry_points=False))
    grid = tmp_path / "g.png"
    result = CliRunner().invoke(app, ["sample", str(folder), "--n", "2", "--steps", "3", "--out", str(grid)])
    assert result.exit_code == 0 and grid.is_file(), result.output
    for method in ("dkdm", "boot", "sid", "diff-instruct", "synthetic"):
        args = ["distill", "--teacher", str(folder), "--student", "unet", "--method", method, "--dry-run"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (method, result.output)


def test_flow_scheduler_values_it_cannot_honour_are_refused(tmp_path):
    for key, value, needle in (
        ("use_dynamic_shifting", True, "use_dynamic_shifting = true: the shift depends on the image size"),
        ("shift", -1.0, "shift = -1.0 is not a number > 0"),
        ("time_shift_type", "cubic", "time_shift_type = 'cubic' is not one of"),
    ):
        config = {"_class_name": "FlowMatchEulerDiscreteScheduler", key: value, SOURCE_KEY: "s.json"}
        with pytest.raises(UserError, match=re.escape(f"s.json: {needle}")):
            read_schedule(config, learned=False, flow=True)
    with pytest.raises(UserError, match="which this teacher family does not read"):
        read_schedule({"_class_name": "FlowMatchEulerDiscreteScheduler"}, learned=False)
