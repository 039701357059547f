"""Noise-schedule math for VP diffusion, vectorised over per-sample integer timesteps.

Every coefficient table is float64; it is cast to the tensor's dtype only when gathered. Beta
tables come from diffusers' own scheduler so they match a teacher's scheduler exactly.
``DDPMScheduler.step`` takes one scalar timestep; these functions take a batch whose samples sit
at different timesteps (the DKDM pool), and equal diffusers' steps at every scalar timestep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


class NoiseSchedule:
    """alphas_cumprod and the posterior tables of a discrete VP schedule with T steps."""

    def __init__(self, betas: Tensor):
        betas = betas.detach().to(torch.float64).cpu()
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor with values in (0, 1]")
        self.betas = betas
        self.num_train_timesteps = len(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0) for adjacent steps (IDDPM's tables).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log of the posterior variance, clipped at t = 0 where it is 0 (IDDPM convention).
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.edm_sigmas_cache = self.sqrt_one_minus_alphas_cumprod / self.sqrt_alphas_cumprod
        self._device_cache: dict[tuple[str, torch.device], Tensor] = {}

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        trained_betas: Any = None,
        **_: Any,
    ) -> NoiseSchedule:
        """Betas exactly as diffusers' DDPMScheduler builds them for this configuration."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            trained_betas=trained_betas,
        )
        return cls(scheduler.betas)

    @classmethod
    def from_spec(cls, spec: Any) -> NoiseSchedule:
        """From a ``TeacherSpec``: its ``schedule`` dict holds diffusers scheduler keys."""
        return cls.from_config(num_train_timesteps=spec.num_train_timesteps, **_schedule_keys(spec.schedule))

    # -- gathering -------------------------------------------------------------------------------
    def _table(self, name: str, device: torch.device) -> Tensor:
        key = (name, device)
        if key not in self._device_cache:
            self._device_cache[key] = getattr(self, name).to(device)
        return self._device_cache[key]

    def gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at per-sample timesteps ``t`` (B,), shaped to broadcast against ``like``."""
        values = self._table(name, like.device)[t.to(like.device).long()]
        return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def _acp(self, t: Tensor, like: Tensor) -> Tensor:
        """alphas_cumprod at t, with t = -1 meaning "before step 0" (alpha_cumprod = 1)."""
        t = t.to(like.device).long()
        table = self._table("alphas_cumprod", like.device)
        values = torch.where(
            t >= 0, table[t.clamp(min=0)], torch.ones((), dtype=table.dtype, device=table.device)
        )
        return values.reshape(-1, *([1] * (like.ndim - 1)))  # float64

    def alpha(self, t: Tensor, like: Tensor) -> Tensor:
        return self.gather("sqrt_alphas_cumprod", t, like)

    def sigma(self, t: Tensor, like: Tensor) -> Tensor:
        return self.gather("sqrt_one_minus_alphas_cumprod", t, like)

    def log_snr(self, t: Tensor) -> Tensor:
        """log(alpha^2 / sigma^2) at integer timesteps, float64."""
        acp = self.alphas_cumprod[t.long().cpu()]
        return torch.log(acp) - torch.log1p(-acp)

    # -- the EDM view: x_t / alpha_t = x0 + sigma eps --------------------------------------------------
    @property
    def edm_sigmas(self) -> Tensor:
        """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) at every timestep (float64, increasing)."""
        return self.edm_sigmas_cache.clone()

    def edm_sigma(self, t: Tensor, like: Tensor) -> Tensor:
        """The EDM noise level sqrt((1 - alpha_bar_t) / alpha_bar_t) at per-sample timesteps."""
        return self.gather("edm_sigmas_cache", t, like)

    def timesteps_for_sigmas(self, sigmas: Tensor) -> Tensor:
        """The timestep whose EDM sigma is nearest (in log) to each of ``sigmas``, clamped to the schedule."""
        table = torch.log(self._table("edm_sigmas_cache", sigmas.device))
        log_sigma = torch.log(sigmas.to(torch.float64).clamp(min=1e-30))
        upper = torch.searchsorted(table, log_sigma).clamp(1, len(table) - 1)
        lower = upper - 1
        nearer_lower = (log_sigma - table[lower]) < (table[upper] - log_sigma)
        return torch.where(nearer_lower, lower, upper)

    # -- forward process and parameterisations ----------------------------------------------------
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return self.alpha(t, x0) * x0 + self.sigma(t, x0) * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return self.alpha(t, x0) * noise - self.sigma(t, x0) * x0

    def eps_to_x0(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return (x_t - self.sigma(t, x_t) * eps) / self.alpha(t, x_t)

    def x0_to_eps(self, x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        return (x_t - self.alpha(t, x_t) * x0) / self.sigma(t, x_t)

    def v_to_x0(self, x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
        return self.alpha(t, x_t) * x_t - self.sigma(t, x_t) * v

    def v_to_eps(self, x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
        return self.sigma(t, x_t) * x_t + self.alpha(t, x_t) * v

    def to_eps_x0(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, prediction_type: str
    ) -> tuple[Tensor, Tensor]:
        """(eps, x0) from a model output of any prediction type; neither is clipped."""
        if prediction_type == "epsilon":
            return model_output, self.eps_to_x0(x_t, model_output, t)
        if prediction_type == "v_prediction":
            return self.v_to_eps(x_t, model_output, t), self.v_to_x0(x_t, model_output, t)
        if prediction_type == "sample":
            return self.x0_to_eps(x_t, model_output, t), model_output
        raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}")

    # -- the chain: index k is the timestep ------------------------------------------------------------
    def time_of(self, k: Tensor) -> Tensor:
        """The network timesteps of chain indices (a discrete VP chain's index is its timestep)."""
        return k

    def jump(
        self,
        x_t: Tensor,
        t: Tensor,
        t_prev: Tensor,
        eps: Tensor,
        x0: Tensor | None = None,
        *,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ) -> Tensor:
        """The deterministic (DDIM) move from t to t_prev; x0 is implied by eps (clipped if asked)."""
        return self.ddim_step(
            x_t, t, t_prev, eps, clip_sample=clip_sample, clip_sample_range=clip_sample_range
        )

    # -- reverse steps ---------------------------------------------------------------------------
    def posterior_log_variance(
        self, t: Tensor, prev_t: Tensor, like: Tensor, variance_type: str, var_values: Tensor | None = None
    ) -> Tensor:
        """log sigma^2 of p(x_prev | x_t) for a step t -> prev_t (prev_t = -1 at the last step).

        Matches diffusers' DDPMScheduler._get_variance for respaced steps; for learned_range,
        ``var_values`` in [-1, 1] interpolate between the small and large log variances.
        """
        acp_t, acp_prev = self._acp(t, like), self._acp(prev_t, like)
        beta_t = 1.0 - acp_t / acp_prev
        small = ((1.0 - acp_prev) / (1.0 - acp_t) * beta_t).clamp(min=1e-20)
        if variance_type == "fixed_small":
            log_var = torch.log(small)
        elif variance_type == "fixed_large":
            log_var = torch.log(beta_t)
        elif variance_type == "learned_range":
            if var_values is None:
                raise ValueError("learned_range variance needs the model's variance output")
            frac = (var_values.to(torch.float64) + 1.0) / 2.0
            log_var = frac * torch.log(beta_t) + (1.0 - frac) * torch.log(small)
        else:
            raise ValueError(f"unknown variance type {variance_type!r}; expected one of {VARIANCE_TYPES}")
        return (
            log_var.to(like.dtype) if log_var.shape == like.shape else log_var.expand_as(like).to(like.dtype)
        )

    def posterior_mean(self, x_t: Tensor, x0: Tensor, t: Tensor, prev_t: Tensor) -> Tensor:
        acp_t, acp_prev = self._acp(t, x_t), self._acp(prev_t, x_t)
        beta_t = 1.0 - acp_t / acp_prev
        coef_x0 = acp_prev.sqrt() * beta_t / (1.0 - acp_t)
        coef_xt = (acp_t / acp_prev).sqrt() * (1.0 - acp_prev) / (1.0 - acp_t)
        return coef_x0.to(x_t.dtype) * x0 + coef_xt.to(x_t.dtype) * x_t

    def ddpm_step(
        self,
        x_t: Tensor,
        t: Tensor,
        eps: Tensor,
        *,
        prev_t: Tensor | None = None,
        variance_type: str = "fixed_small",
        var_values: Tensor | None = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Ancestral step x_t -> x_prev for per-sample t (prev_t defaults to t - 1).

        The mean uses x0 implied by ``eps`` (clipped when ``clip_sample``); no noise is added
        where prev_t < 0, as in diffusers.
        """
        prev_t = t - 1 if prev_t is None else prev_t
        x0 = self.eps_to_x0(x_t, eps, t)
        if clip_sample:
            x0 = x0.clamp(-clip_sample_range, clip_sample_range)
        mean = self.posterior_mean(x_t, x0, t, prev_t)
        log_var = self.posterior_log_variance(t, prev_t, x_t, variance_type, var_values)
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        nonzero = (prev_t.to(x_t.device) >= 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return mean + nonzero * torch.exp(0.5 * log_var) * noise

    def ddim_step(
        self,
        x_t: Tensor,
        t: Tensor,
        prev_t: Tensor,
        eps: Tensor,
        *,
        eta: float = 0.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        final_alpha_cumprod: float = 1.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DDIM step x_t -> x_prev for per-sample (t, prev_t); prev_t < 0 uses ``final_alpha_cumprod``.

        Equals diffusers' DDIMScheduler.step (with clipping it re-derives eps from the clipped x0).
        """
        acp_t = self._acp(t, x_t)
        prev = prev_t.to(x_t.device).long()
        acp_prev = torch.where(
            prev.reshape(acp_t.shape) >= 0,
            self._acp(prev.clamp(min=0), x_t),
            torch.full_like(acp_t, final_alpha_cumprod),
        )
        x0 = (x_t - (1.0 - acp_t).sqrt().to(x_t.dtype) * eps) / acp_t.sqrt().to(x_t.dtype)
        if clip_sample:
            x0 = x0.clamp(-clip_sample_range, clip_sample_range)
            eps = (x_t - acp_t.sqrt().to(x_t.dtype) * x0) / (1.0 - acp_t).sqrt().to(x_t.dtype)
        variance = (1.0 - acp_prev) / (1.0 - acp_t) * (1.0 - acp_t / acp_prev)
        std = eta * variance.clamp(min=0).sqrt()
        direction = (1.0 - acp_prev - std**2).clamp(min=0).sqrt()
        out = acp_prev.sqrt().to(x_t.dtype) * x0 + direction.to(x_t.dtype) * eps
        if eta > 0:
            if noise is None:
                noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            out = out + std.to(x_t.dtype) * noise
        return out


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def inference_timesteps(num_train_timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """Descending timesteps for an N-step sampler; "trailing" includes T-1 (guided-diffusion's respacing)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "trailing":
        ratio = num_train_timesteps / steps
        ts = [round(num_train_timesteps - i * ratio) - 1 for i in range(steps)]
    elif spacing == "leading":
        ratio = num_train_timesteps // steps
        ts = [i * ratio for i in reversed(range(steps))]
    elif spacing == "linspace":
        ts = [round(v) for v in reversed(torch.linspace(0, num_train_timesteps - 1, steps).tolist())]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}")
    return ts


def _schedule_keys(schedule: Mapping[str, Any]) -> dict[str, Any]:
    allowed = ("beta_schedule", "beta_start", "beta_end", "trained_betas")
    return {k: v for k, v in schedule.items() if k in allowed}
