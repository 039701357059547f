"""The reference sampler loop against diffusers' scheduler loops (DDIMPipeline / DDPMPipeline style)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from dkdm_zoo.diffusion.schedule import NoiseSchedule
from dkdm_zoo.sampling.chain import sample_loop

T = 1000
CONFIG = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


class TinyModel(nn.Module):
    """A fixed, timestep-dependent eps model (optionally with learned-variance channels)."""

    def __init__(self, channels: int = 3, learned: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(channels, channels * (2 if learned else 1), 3, padding=1)
        self.channels = channels

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1, 1, 1).float().expand(x.shape[0], 1, 1, 1)
        out = torch.tanh(self.conv(x)) + 0.1 * torch.sin(t / 100.0)
        return out


def _eps_fn(model: TinyModel):
    def eps_fn(x, t):
        out = model(x, t)
        c = model.channels
        return out[:, :c], (out[:, c:] if out.shape[1] > c else None)

    return eps_fn


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_loop_equals_diffusers_ddim_loop(steps, eta, clip):
    model = TinyModel()
    schedule = NoiseSchedule.from_config(num_train_timesteps=T, **CONFIG)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = sample_loop(
        _eps_fn(model),
        schedule,
        noise,
        steps=steps,
        sampler="ddim",
        eta=eta,
        clip_sample=clip,
        generator=torch.Generator().manual_seed(1),
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=T, **CONFIG, timestep_spacing="trailing", clip_sample=clip, set_alpha_to_one=True
    )
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(1)
    x = noise.clone()
    for t in scheduler.timesteps:
        eps = model(x, t)
        # our loop draws the step noise exactly as diffusers does: randn(shape, generator)
        x = scheduler.step(eps, t, x, eta=eta, use_clipped_model_output=True, generator=g).prev_sample
    # float32 rounding differences compound over stochastic steps
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)
    assert ours.abs().max() > 0.1


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_ddpm_loop_full_chain_equals_diffusers_ddpm_loop(variance_type):
    """Every step of a 100-step schedule (no respacing): diffusers' last step (t = 0) adds no noise either."""
    T = 100
    model = TinyModel(learned=variance_type == "learned_range")
    schedule = NoiseSchedule.from_config(num_train_timesteps=T, **CONFIG)
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    scheduler = DDPMScheduler(num_train_timesteps=T, **CONFIG, variance_type=variance_type, clip_sample=True)
    g = torch.Generator().manual_seed(7)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, generator=g).prev_sample
    ours = sample_loop(
        _eps_fn(model),
        schedule,
        noise,
        steps=T,
        sampler="ddpm",
        spacing="leading",
        variance_type=variance_type,
        clip_sample=True,
        generator=torch.Generator().manual_seed(7),
    )
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)


def test_ddpm_loop_respaced_equals_diffusers_fixed_small():
    """Respaced (trailing) DDPM; with fixed_small diffusers' extra last-step noise has std 1e-10."""
    model = TinyModel()
    schedule = NoiseSchedule.from_config(num_train_timesteps=T, **CONFIG)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = DDPMScheduler(num_train_timesteps=T, **CONFIG, timestep_spacing="trailing", clip_sample=False)
    scheduler.set_timesteps(25)
    g = torch.Generator().manual_seed(3)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x, generator=g).prev_sample
    ours = sample_loop(
        _eps_fn(model), schedule, noise, steps=25, sampler="ddpm", generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_unknown_sampler_is_refused():
    schedule = NoiseSchedule.from_config(num_train_timesteps=T, **CONFIG)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_loop(_eps_fn(TinyModel()), schedule, torch.zeros(1, 3, 4, 4), steps=2, sampler="euler")
