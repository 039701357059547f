"""`ddpm-unet`: tiny UNet2DModels saved to tmp folders, checked against direct diffusers calls."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher, load

from .tiny import ddpm_scheduler, save_model_folder, save_pipeline, tiny_unet

TS = torch.tensor([0, 5, 250, 640, 999])


def _inputs(n: int = len(TS), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _diffusers_x0(scheduler: DDPMScheduler, out: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """x0 exactly as DDPMScheduler.step computes pred_original_sample (no clipping)."""
    acp = scheduler.alphas_cumprod[t]
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - (1 - acp) ** 0.5 * out) / acp**0.5
    if kind == "v_prediction":
        return acp**0.5 * x - (1 - acp) ** 0.5 * out
    return out


@pytest.mark.parametrize("layout", ["pipeline", "model"])
@pytest.mark.parametrize(
    "prediction,variance",
    [("epsilon", "fixed_small"), ("v_prediction", "fixed_large"), ("sample", "learned_range")],
)
def test_predictions_equal_direct_diffusers_calls(tmp_path, layout, prediction, variance):
    unet = tiny_unet(out_channels=6 if variance == "learned_range" else 3)
    scheduler = ddpm_scheduler(prediction_type=prediction, variance_type=variance)
    save = save_pipeline if layout == "pipeline" else save_model_folder
    teacher = load(path=str(save(tmp_path / layout, unet, scheduler)))
    spec = teacher.spec
    assert (spec.prediction_type, spec.variance_type, spec.sample_shape) == (prediction, variance, (3, 8, 8))
    assert spec.out_channels == unet.config.out_channels and spec.conditioning == "none"
    assert all(not p.requires_grad for p in teacher.unet.parameters()) and not teacher.unet.training

    x = _inputs()
    pred = teacher.predict(x, TS)
    for i, t in enumerate(TS.tolist()):
        raw = unet(x[i : i + 1], t).sample
        x0 = _diffusers_x0(scheduler, raw[:, :3], x[i : i + 1], t)
        torch.testing.assert_close(
            pred.x0[i : i + 1], x0, rtol=1e-4, atol=1e-4 * max(1.0, float(x0.abs().max()))
        )
        # eps implied by diffusers' x0: x_t = sqrt(acp) x0 + sqrt(1-acp) eps
        acp = scheduler.alphas_cumprod[t]
        eps = (x[i : i + 1] - acp**0.5 * x0) / (1 - acp) ** 0.5
        if t > 0:  # at t = 0, sqrt(1 - acp) = 0.01 amplifies float32 noise
            torch.testing.assert_close(pred.eps[i : i + 1], eps, rtol=1e-3, atol=1e-3)
        if variance == "learned_range":
            torch.testing.assert_close(pred.var_values[i : i + 1], raw[:, 3:])
        else:
            assert pred.var_values is None


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_step_equals_ddpm_scheduler_step_per_sample(tmp_path, variance):
    """Teacher.step draws randn(x.shape) from its generator; diffusers draws randn(1, ...) per call.

    So: diffusers' step minus its own rebuilt noise term is its mean; its std comes from its own
    _get_variance; our output must equal that mean + that std * our rebuilt draw.
    """
    unet = tiny_unet(out_channels=6 if variance == "learned_range" else 3, seed=2)
    scheduler = ddpm_scheduler(variance_type=variance, clip_sample=True)
    teacher = load(path=str(save_pipeline(tmp_path / "p", unet, scheduler)))
    x = _inputs(seed=1)
    x_prev, _ = teacher.step(x, TS, generator=torch.Generator().manual_seed(9))
    our_noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    for i, t in enumerate(TS.tolist()):
        with torch.no_grad():
            raw = unet(x[i : i + 1], t).sample
        ref = scheduler.step(
            raw, t, x[i : i + 1], generator=torch.Generator().manual_seed(50 + i)
        ).prev_sample
        if t == 0:
            torch.testing.assert_close(x_prev[i : i + 1], ref, rtol=1e-4, atol=1e-4)
            continue
        var = scheduler._get_variance(
            t, predicted_variance=raw[:, 3:] if variance == "learned_range" else None
        )
        std = torch.exp(0.5 * var) if variance == "learned_range" else var**0.5
        mean = ref - std * torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(50 + i))
        torch.testing.assert_close(x_prev[i : i + 1], mean + std * our_noise[i : i + 1], rtol=1e-4, atol=1e-4)


def test_cfg_equals_uncond_plus_scale_times_difference(tmp_path):
    unet = tiny_unet(num_class_embeds=5, seed=4)  # 4 classes + the null label 4
    teacher = load(path=str(save_pipeline(tmp_path / "p", unet, ddpm_scheduler())), guidance_scale=3.0)
    assert teacher.spec.conditioning == "class" and teacher.spec.num_classes == 4
    x, t = _inputs(), TS
    labels = torch.tensor([0, 1, 2, 3, 1])
    cond = teacher.make_condition(labels=labels)
    guided = teacher.predict(x, t, cond)
    e_c = unet(x, t, class_labels=labels).sample
    e_u = unet(x, t, class_labels=torch.full_like(labels, 4)).sample
    torch.testing.assert_close(guided.eps, e_u + 3.0 * (e_c - e_u), rtol=1e-4, atol=1e-4)
    plain = teacher.predict(x, t, cond, guidance_scale=1.0)
    torch.testing.assert_close(plain.eps, e_c, rtol=1e-5, atol=1e-5)
    assert (guided.eps - plain.eps).abs().max() > 1e-3
    with pytest.raises(UserError, match="0..3"):
        teacher.make_condition(labels=[4])
    with pytest.raises(UserError, match="no text prompt"):
        teacher.make_condition(prompts=["a cat"])


def test_sample_ddim_equals_diffusers_ddim_loop(tmp_path):
    unet = tiny_unet(seed=5)
    scheduler = ddpm_scheduler(clip_sample=True)
    teacher = load(path=str(save_model_folder(tmp_path / "m", unet, scheduler)))
    noise = _inputs(2, seed=3)
    ours = teacher.sample(2, steps=10, sampler="ddim", noise=noise)
    ddim = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    ddim.set_timesteps(10)
    x = noise.clone()
    with torch.no_grad():
        for t in ddim.timesteps:
            # our DDIM re-derives eps from the clipped x0 (guided-diffusion), i.e. use_clipped_model_output
            x = ddim.step(unet(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_registry_half_precision_and_constructor(tmp_path):
    unet, scheduler = tiny_unet(seed=6), ddpm_scheduler()
    folder = save_pipeline(tmp_path / "p", unet, scheduler)
    teacher = build_registry().create("teachers", "ddpm-unet", path=str(folder), dtype="bfloat16")
    assert isinstance(teacher, DDPMUNetTeacher)
    assert teacher.dtype is torch.bfloat16 and next(teacher.unet.parameters()).dtype is torch.bfloat16
    x = _inputs()
    pred = teacher.predict(x, TS)
    assert pred.eps.dtype is torch.float32
    ref = unet(x, TS).sample
    assert (pred.eps - ref).abs().max() < 0.1  # bf16 has ~3 significant digits
    # the direct constructor still works as before
    direct = DDPMUNetTeacher(unet, dict(scheduler.config))
    torch.testing.assert_close(direct.predict(x, TS).eps, ref)
