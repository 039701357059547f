"""NoiseSchedule against diffusers' schedulers (scalar timesteps) and closed forms.

diffusers steps one scalar timestep for the whole batch; ours steps a batch whose samples sit at
different timesteps. Each test builds such a batch and compares it, sample by sample, with
diffusers at that sample's scalar timestep. Noise is shared exactly: diffusers draws its step
noise as ``torch.randn(shape, generator=g)``, so we seed one generator per sample and rebuild the
same draw for our step's explicit ``noise`` argument.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dkdm_zoo.diffusion.schedule import NoiseSchedule, inference_timesteps, normal_kl

T = 1000
SCHEDULES = [
    {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
]
TS = torch.tensor([0, 1, 7, 250, 511, 998, 999])


def _pair(config: dict, **scheduler_kwargs) -> tuple[NoiseSchedule, DDPMScheduler]:
    ours = NoiseSchedule.from_config(num_train_timesteps=T, **config)
    theirs = DDPMScheduler(num_train_timesteps=T, **config, **scheduler_kwargs)
    return ours, theirs


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> None:
    # diffusers keeps its tables in float32, ours in float64: compare relative to the magnitude.
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * scale)


def _seeded_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config", SCHEDULES, ids=lambda c: c["beta_schedule"])
def test_alphas_cumprod_match_diffusers(config):
    ours, theirs = _pair(config)
    torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.betas.float(), theirs.betas)
    # closed forms
    if config["beta_schedule"] == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        torch.testing.assert_close(ours.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=1e-6, atol=1e-9)
    if config["beta_schedule"] == "squaredcos_cap_v2":

        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64
        )
        torch.testing.assert_close(ours.betas, betas, rtol=1e-5, atol=1e-7)
    # posterior variance closed form: beta_t (1 - acp_{t-1}) / (1 - acp_t), and 0 at t = 0
    acp = ours.alphas_cumprod
    assert ours.posterior_variance[0] == 0
    torch.testing.assert_close(ours.posterior_variance[1:], ours.betas[1:] * (1 - acp[:-1]) / (1 - acp[1:]))


@pytest.mark.parametrize("config", SCHEDULES, ids=lambda c: c["beta_schedule"])
def test_add_noise_and_velocity_match_diffusers_per_sample(config):
    ours, theirs = _pair(config)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(len(TS), 3, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = ours.add_noise(x0, noise, TS)
    v = ours.velocity(x0, noise, TS)
    for i, t in enumerate(TS.tolist()):
        tt = torch.tensor([t])
        _close(x_t[i : i + 1], theirs.add_noise(x0[i : i + 1], noise[i : i + 1], tt))
        _close(v[i : i + 1], theirs.get_velocity(x0[i : i + 1], noise[i : i + 1], tt))
    # diffusers' add_noise also takes a per-sample timestep tensor directly
    _close(x_t, theirs.add_noise(x0, noise, TS))


@pytest.mark.parametrize("config", SCHEDULES, ids=lambda c: c["beta_schedule"])
def test_parameterisations_round_trip(config):
    ours, _ = _pair(config)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(len(TS), 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = ours.add_noise(x0, eps, TS)
    v = ours.velocity(x0, eps, TS)
    torch.testing.assert_close(ours.eps_to_x0(x_t, eps, TS), x0)
    torch.testing.assert_close(
        ours.x0_to_eps(x_t[1:], x0[1:], TS[1:]), eps[1:]
    )  # x0->eps is ill-posed at t=0 only numerically
    torch.testing.assert_close(ours.v_to_x0(x_t, v, TS), x0)
    torch.testing.assert_close(ours.v_to_eps(x_t, v, TS), eps)
    for kind, out in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        e, x = ours.to_eps_x0(out, x_t, TS, kind)
        torch.testing.assert_close(x, x0, rtol=1e-7, atol=1e-6)
        if kind != "sample":
            torch.testing.assert_close(e, eps)
    # alpha^2 + sigma^2 = 1 and log-SNR
    a, s = ours.alpha(TS, x0), ours.sigma(TS, x0)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))
    torch.testing.assert_close(ours.log_snr(TS), torch.log(a.flatten() ** 2 / s.flatten() ** 2))
    with pytest.raises(ValueError):
        ours.to_eps_x0(eps, x_t, TS, "score")


def _ddpm_case(variance_type: str, prediction: str, clip: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    channels = 3
    x_t = torch.randn(len(TS), channels, 4, 4, generator=g) * 1.5
    out_channels = 2 * channels if variance_type == "learned_range" else channels
    model_output = torch.randn(len(TS), out_channels, 4, 4, generator=g)
    if variance_type == "learned_range":
        model_output[:, channels:] = model_output[:, channels:].tanh()  # IDDPM's v in [-1, 1]
    return x_t, model_output


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_step_per_sample_equals_diffusers(variance_type, clip, prediction):
    config = SCHEDULES[0]
    ours, theirs = _pair(config, variance_type=variance_type, clip_sample=clip, prediction_type=prediction)
    x_t, model_output = _ddpm_case(variance_type, prediction, clip)
    c = x_t.shape[1]
    eps, _ = ours.to_eps_x0(model_output[:, :c], x_t, TS, prediction)
    var_values = model_output[:, c:] if variance_type == "learned_range" else None
    noise = torch.cat([_seeded_noise(100 + i, (1, *x_t.shape[1:])) for i in range(len(TS))])
    got = ours.ddpm_step(
        x_t, TS, eps, variance_type=variance_type, var_values=var_values, clip_sample=clip, noise=noise
    )
    for i, t in enumerate(TS.tolist()):
        ref = theirs.step(
            model_output[i : i + 1], t, x_t[i : i + 1], generator=torch.Generator().manual_seed(100 + i)
        ).prev_sample
        _close(got[i : i + 1], ref, tol=1e-4)
    # the noise term is really there (mean alone would not match where the variance is large)
    mean_only = ours.ddpm_step(
        x_t,
        TS,
        eps,
        variance_type=variance_type,
        var_values=var_values,
        clip_sample=clip,
        noise=torch.zeros_like(x_t),
    )
    assert (got[-1] - mean_only[-1]).abs().max() > 0.01
    torch.testing.assert_close(got[0], mean_only[0])  # t = 0: no noise, as in diffusers


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_respaced_equals_diffusers_set_timesteps(variance_type, clip):
    steps = 10
    ours, theirs = _pair(
        SCHEDULES[1], variance_type=variance_type, clip_sample=clip, timestep_spacing="trailing"
    )
    theirs.set_timesteps(steps)
    timesteps = theirs.timesteps.tolist()
    assert timesteps == inference_timesteps(T, steps, "trailing")
    t = torch.tensor(timesteps)
    prev_t = torch.tensor(timesteps[1:] + [-1])
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(steps, 3, 4, 4, generator=g)
    model_output = torch.randn(steps, 6 if variance_type == "learned_range" else 3, 4, 4, generator=g)
    if variance_type == "learned_range":
        model_output[:, 3:] = model_output[:, 3:].tanh()
    var_values = model_output[:, 3:] if variance_type == "learned_range" else None
    noise = torch.cat([_seeded_noise(200 + i, (1, 3, 4, 4)) for i in range(steps)])
    kwargs = dict(prev_t=prev_t, variance_type=variance_type, var_values=var_values, clip_sample=clip)
    got = ours.ddpm_step(x_t, t, model_output[:, :3], noise=noise, **kwargs)
    mean = ours.ddpm_step(x_t, t, model_output[:, :3], noise=torch.zeros_like(x_t), **kwargs)
    for i, tv in enumerate(timesteps):
        ref = theirs.step(
            model_output[i : i + 1], tv, x_t[i : i + 1], generator=torch.Generator().manual_seed(200 + i)
        )
        if i < steps - 1:
            _close(got[i : i + 1], ref.prev_sample, tol=1e-4)
        else:
            # Last respaced step (t = 99 -> -1): diffusers still adds noise because t > 0; we return
            # the posterior mean, as IDDPM's respaced sampler does. The means agree.
            ref_mean = ref.prev_sample - _seeded_noise(200 + i, (1, 3, 4, 4)) * _diffusers_std(
                theirs, tv, model_output[i : i + 1, 3:], variance_type
            )
            _close(mean[i : i + 1], ref_mean, tol=1e-4)
            torch.testing.assert_close(got[i], mean[i])


def _diffusers_std(scheduler: DDPMScheduler, t: int, predicted_variance: torch.Tensor, variance_type: str):
    var = scheduler._get_variance(t, predicted_variance=predicted_variance)
    return torch.exp(0.5 * var) if variance_type == "learned_range" else var**0.5


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_step_per_sample_equals_diffusers(eta, clip, set_alpha_to_one):
    steps = 20
    ours = NoiseSchedule.from_config(num_train_timesteps=T, **SCHEDULES[0])
    theirs = DDIMScheduler(
        num_train_timesteps=T,
        **SCHEDULES[0],
        clip_sample=clip,
        set_alpha_to_one=set_alpha_to_one,
        timestep_spacing="trailing",
    )
    theirs.set_timesteps(steps)
    timesteps = theirs.timesteps.tolist()
    assert timesteps == inference_timesteps(T, steps, "trailing")
    t = torch.tensor(timesteps)
    prev_t = t - T // steps  # diffusers' DDIM prev step; -1 at the last step
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn(steps, 3, 4, 4, generator=g) * 1.3
    eps = torch.randn(x_t.shape, generator=g)
    noise = torch.randn(x_t.shape, generator=g)
    final = 1.0 if set_alpha_to_one else float(ours.alphas_cumprod[0])
    got = ours.ddim_step(
        x_t, t, prev_t, eps, eta=eta, clip_sample=clip, final_alpha_cumprod=final, noise=noise
    )
    for i, tv in enumerate(timesteps):
        ref = theirs.step(
            eps[i : i + 1],
            tv,
            x_t[i : i + 1],
            eta=eta,
            use_clipped_model_output=True,
            variance_noise=noise[i : i + 1],
        ).prev_sample
        _close(got[i : i + 1], ref, tol=1e-4)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [1, 3, 7, 10, 50, 64, 333, 1000])
def test_inference_timesteps_equal_diffusers(spacing, steps):
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=0)
    scheduler.set_timesteps(steps)
    ts = inference_timesteps(T, steps, spacing)
    assert ts == scheduler.timesteps.tolist()
    assert len(ts) == steps and ts == sorted(ts, reverse=True) and len(set(ts)) == steps
    if spacing == "trailing":
        assert ts[0] == T - 1


def test_inference_timesteps_rejects_bad_input():
    with pytest.raises(ValueError):
        inference_timesteps(T, 0)
    with pytest.raises(ValueError):
        inference_timesteps(T, T + 1)
    with pytest.raises(ValueError):
        inference_timesteps(T, 10, "karras")


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(5)
    m1, m2 = (
        torch.randn(64, generator=g, dtype=torch.float64),
        torch.randn(64, generator=g, dtype=torch.float64),
    )
    lv1, lv2 = (
        torch.randn(64, generator=g, dtype=torch.float64),
        torch.randn(64, generator=g, dtype=torch.float64),
    )
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)
    assert torch.all(normal_kl(m1, lv1, m1, lv1).abs() < 1e-12)


def test_posterior_matches_closed_form_bayes():
    """q(x_{t-1} | x_t, x0) by completing the square, for adjacent steps (float64)."""
    ours = NoiseSchedule.from_config(num_train_timesteps=T, **SCHEDULES[0])
    t = torch.tensor([1, 10, 500, 999])
    x0, x_t = torch.randn(4, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    beta = ours.betas[t].reshape(-1, 1)
    acp_prev = ours.alphas_cumprod[t - 1].reshape(-1, 1)
    # precision-weighted combination of N(x_t; sqrt(1-beta) x, beta) and N(x; sqrt(acp_prev) x0, 1-acp_prev)
    prec = (1 - beta) / beta + 1 / (1 - acp_prev)
    mean = ((1 - beta).sqrt() / beta * x_t + acp_prev.sqrt() / (1 - acp_prev) * x0) / prec
    torch.testing.assert_close(ours.posterior_mean(x_t, x0, t, t - 1), mean)
    log_var = ours.posterior_log_variance(t, t - 1, x_t, "fixed_small")
    torch.testing.assert_close(log_var, torch.log(1 / prec))
    torch.testing.assert_close(ours.posterior_log_variance(t, t - 1, x_t, "fixed_large"), beta.log())
