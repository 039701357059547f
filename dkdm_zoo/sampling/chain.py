"""The denoising chain (DDPM ancestral, DDIM) over any eps-model, with "trailing" spacing, and the
one sampler of a student network (one-step generators in one call).

Teachers and students share these: a model function maps (x_t, t) to (eps, variance values or
None) and the loop walks the chosen timesteps with the per-sample steps of ``NoiseSchedule``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dkdm_zoo.diffusion.flow import FlowSchedule
from dkdm_zoo.diffusion.schedule import NoiseSchedule, inference_timesteps
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import split_output
from dkdm_zoo.students.one_step import draw_step_noise, is_one_step

EpsFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]
SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def sample_loop(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    noise: Tensor,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    variance_type: str = "fixed_small",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    spacing: str = "trailing",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Denoise ``noise`` (pure noise at t = T-1) to x_0 in ``steps`` model evaluations."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    timesteps = inference_timesteps(schedule.num_train_timesteps, steps, spacing)
    x = noise
    batch = x.shape[0]
    for i, t_value in enumerate(timesteps):
        prev_value = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t = torch.full((batch,), t_value, device=x.device, dtype=torch.long)
        prev_t = torch.full((batch,), prev_value, device=x.device, dtype=torch.long)
        eps, var_values = eps_fn(x, t)
        if sampler == "ddim":
            x = schedule.ddim_step(
                x,
                t,
                prev_t,
                eps,
                eta=eta,
                clip_sample=clip_sample,
                clip_sample_range=clip_sample_range,
                generator=generator,
            )
        else:
            x = schedule.ddpm_step(
                x,
                t,
                eps,
                prev_t=prev_t,
                variance_type=variance_type,
                var_values=var_values,
                clip_sample=clip_sample,
                clip_sample_range=clip_sample_range,
                generator=generator,
            )
        if progress is not None:
            progress(1)
    return x


def sample_denoiser(
    eps_fn: EpsFn,
    spec: TeacherSpec,
    schedule: NoiseSchedule,
    noise: Tensor,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """A multi-step model (a teacher, a student) sampled on the teacher's schedule with the teacher's
    variance and clipping: ``steps`` evaluations of ``eps_fn``, ``progress(1)`` after each."""
    return sample_loop(
        eps_fn,
        schedule,
        noise,
        steps=steps,
        sampler=sampler,
        variance_type=spec.variance_type,
        clip_sample=spec.clip_sample,
        clip_sample_range=spec.clip_sample_range,
        generator=generator,
        progress=progress,
    )


@torch.no_grad()
def sample_student(
    student: nn.Module,
    spec: TeacherSpec,
    schedule: NoiseSchedule | FlowSchedule,
    noise: Tensor,
    model_kwargs: dict[str, Tensor],
    *,
    steps: int = 50,
    sampler: str = "ddim",
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    step_noise: Tensor | None = None,
) -> Tensor:
    """A student's samples in diffusion space (float32): a K-step generator in exactly K network
    calls per image (``step_noise``, the fresh noise of its steps 2..K, else drawn from
    ``generator``), a flow teacher's student as a velocity model through ``sample_flow``, any other
    student as an eps-model through ``sample_denoiser``."""
    if is_one_step(student):
        if step_noise is None:
            step_noise = draw_step_noise(student, tuple(noise.shape), generator)
        return student.generate(noise, **model_kwargs, step_noise=step_noise, progress=progress).float()
    if spec.process == "flow":  # the student predicts the velocity at timesteps s T

        def predict_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            v = split_output(student(x, t, **model_kwargs), spec.channels)[0].float()
            return schedule.to_eps_x0(v, x, t, "flow")

        return sample_flow(
            predict_fn, schedule, noise, steps=steps, sampler=sampler, generator=generator, progress=progress
        )

    def eps_fn(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        eps, var = split_output(student(x, t, **model_kwargs), spec.channels)
        return eps.float(), None if var is None else var.float()

    return sample_denoiser(
        eps_fn, spec, schedule, noise, steps=steps, sampler=sampler, generator=generator, progress=progress
    )


PredictFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@torch.no_grad()
def sample_flow(
    predict_fn: PredictFn,
    schedule: FlowSchedule,
    noise: Tensor,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """A flow-matching model sampled on its teacher's own grid (``FlowSchedule.sampling_sigmas``):
    ``predict_fn(x, t)`` gives (eps, x0) at timesteps t = s T. "ddim" takes Euler steps of the ODE,
    x <- x + (s' - s) v with v = eps - x0 (the teacher's FlowMatchEuler step); "ddpm" the stochastic
    variant, x <- (1 - s') x0 + s' z with fresh noise z (FlowMatchEuler's ``stochastic_sampling``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if sampler == "ddim" and schedule.class_name == "DPMSolverMultistepScheduler":
        return _own_scheduler_loop(predict_fn, schedule, noise, steps, progress)
    sigmas = schedule.sampling_sigmas(steps).tolist()
    x = noise
    T = schedule.num_train_timesteps
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        t = torch.full((x.shape[0],), s * T, device=x.device, dtype=torch.float32)
        eps, x0 = predict_fn(x, t)
        if sampler == "ddim":
            x = x + (s_next - s) * (eps - x0)
        else:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (1.0 - s_next) * x0 + s_next * z
        if progress is not None:
            progress(1)
    return x


def _own_scheduler_loop(
    predict_fn: PredictFn,
    schedule: FlowSchedule,
    noise: Tensor,
    steps: int,
    progress: Callable[[int], None] | None,
) -> Tensor:
    """A flow teacher whose scheduler is a multistep solver (SANA's DPM-Solver++ with flow sigmas)
    sampled by that scheduler itself: its timesteps into the network, the velocity v = eps - x0 into
    its ``step``, exactly as the teacher's pipeline loops."""
    scheduler = schedule.scheduler()
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise
    for t_value in scheduler.timesteps:
        t = torch.full((x.shape[0],), float(t_value), device=x.device, dtype=torch.float32)
        eps, x0 = predict_fn(x, t)
        x = scheduler.step(eps - x0, t_value, x, return_dict=False)[0]
        if progress is not None:
            progress(1)
    return x
