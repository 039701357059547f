"""Loss terms shared by the diffusion-training methods (DKDM, synthetic, data).

Learned variance follows IDDPM: ``log sigma^2 = frac * log beta_t + (1 - frac) * log beta_tilde_t``
with ``frac = (v + 1) / 2`` and beta_tilde clipped at t = 0 (IDDPM's posterior_log_variance_clipped).
All terms are computed in float32 and averaged over dimensions in bits (divided by ln 2).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from dkdm_zoo.diffusion.schedule import NoiseSchedule, normal_kl


def learned_log_variance(schedule: NoiseSchedule, t: Tensor, var_values: Tensor) -> Tensor:
    """IDDPM's learned_range log variance of p(x_{t-1} | x_t), elementwise like ``var_values``."""
    min_log = schedule.gather("posterior_log_variance_clipped", t, var_values.float())
    max_log = torch.log(schedule.gather("betas", t, var_values.float()))
    frac = (var_values.float() + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def model_posterior(
    schedule: NoiseSchedule, x_t: Tensor, t: Tensor, eps: Tensor, var_values: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and log variance of p(x_{t-1} | x_t) for an eps-model with learned variance (x0 unclipped)."""
    x0 = schedule.eps_to_x0(x_t.float(), eps.float(), t)
    mean = schedule.posterior_mean(x_t.float(), x0, t, t - 1)
    return mean, learned_log_variance(schedule, t, var_values)


def mean_flat(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def teacher_student_kl(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: Tensor,
    teacher_eps: Tensor,
    teacher_var: Tensor,
    student_eps: Tensor,
    student_var: Tensor,
) -> Tensor:
    """DKDM's L_vlb*: KL(p_teacher(x_{t-1}|x_t) || p_student(x_{t-1}|x_t)) per sample, in bits.

    The student's eps is detached, so this term trains only the student's variance output.
    """
    t_mean, t_logvar = model_posterior(schedule, x_t, t, teacher_eps, teacher_var)
    s_mean, s_logvar = model_posterior(schedule, x_t, t, student_eps.detach(), student_var)
    return mean_flat(normal_kl(t_mean, t_logvar, s_mean, s_logvar)) / math.log(2.0)


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Log-likelihood of 8-bit images x in [-1, 1] under a discretised Gaussian (IDDPM's decoder)."""
    centered = x - mean
    inv_stdv = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vlb_term(
    schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor, student_eps: Tensor, student_var: Tensor
) -> Tensor:
    """IDDPM's hybrid-loss vlb term per sample, in bits, with the student's eps detached.

    KL(q(x_{t-1}|x_t,x0) || p_student) for t > 0, the decoder NLL at t = 0; scaled by T/1000 as
    IDDPM does, so it adds to the eps MSE with its lambda = 0.001 on the summed vlb.
    """
    x0, x_t = x0.float(), x_t.float()
    true_mean = schedule.posterior_mean(x_t, x0, t, t - 1)
    true_logvar = schedule.gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
    mean, logvar = model_posterior(schedule, x_t, t, student_eps.detach(), student_var)
    kl = mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)) / math.log(2.0)
    vb = torch.where(t.to(x_t.device) == 0, nll, kl)
    return vb * (schedule.num_train_timesteps / 1000.0)


# -- where and how the student's eps is compared with its target ---------------------------------------

LossTarget = Literal["eps", "x0", "v"]
LossWeighting = Literal["none", "min-snr"]


def eps_loss_weights(
    alphas_cumprod: np.ndarray,
    target: LossTarget = "eps",
    weighting: LossWeighting = "none",
    gamma: float = 5.0,
) -> np.ndarray:
    """Per-timestep weights w_t of the eps MSE that equal an MSE in ``target`` space, ``weighting``-weighted.

    With x0 = (x_t - sigma eps) / alpha and v = alpha eps - sigma x0 (SNR = alpha^2 / sigma^2), a
    difference of eps predictions at the same x_t is a difference of x0 predictions times
    sigma / alpha and of v predictions times 1 / alpha, so the MSE in x0 space is (1 / SNR) times
    the eps MSE and in v space (1 + SNR) / SNR times. ``min-snr`` is min-SNR-gamma (Hang et al.,
    ICCV 2023) in the target's own space: min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0,
    min(SNR, gamma) / (SNR + 1) for v; in eps terms always min(SNR, gamma) / SNR, whatever the target.
    Host-side (float64 numpy, indexed by timestep): a training step never reads the device for it.
    """
    acp = np.asarray(alphas_cumprod, dtype=np.float64)
    snr = acp / (1.0 - acp)
    to_eps = {"eps": np.ones_like(snr), "x0": 1.0 / snr, "v": (1.0 + snr) / snr}[target]
    if weighting == "none":
        in_target = np.ones_like(snr)
    else:
        clipped = np.minimum(snr, gamma)
        in_target = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1.0)}[target]
    return to_eps * in_target
