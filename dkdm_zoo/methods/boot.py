"""BOOT (Gu et al., ICML 2024): a one-step generator distilled from a teacher by bootstrapping.

The generator g(eps, t, c) predicts the teacher's DDIM trajectory from ``eps`` in signal form
y_t = (x_t - sigma_t eps) / alpha_t. One iteration, for a pair of grid times s < t:

    target = y_t + (r_t - r_s) (eps - e_hat),   y_t = sg[g(eps, t)],  x_t = alpha_t y_t + sigma_t eps,
                                                 e_hat = teacher eps at (x_t, t), r = sigma / alpha
    loss   = w(t, s) ||g(eps, s) - target||^2 + beta ||g(eps, T) - f_T||^2,  f_T = teacher x0 at (eps, T)

The eps form of the target is an exact DDIM step in y-space and never divides by alpha, which is
tiny near T. Everything runs in the teacher's sample space (latents for a latent teacher).

On a flow-matching teacher (alpha = 1 - s, sigma = s at network time t = s T) the DDIM step is the
Euler step of the flow ODE, the grid is the teacher's own sampling grid (its shift) and the boundary
is s = 1, where alpha = 0 and r is infinite; there the same target is written as
x0_hat - r_s (eps - e_hat), which equals the eps form for t < T and stays finite at s_t = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dkdm_zoo.diffusion.schedule import inference_timesteps
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import STUDENT, Logs, MethodOptions, Passes, Plan
from dkdm_zoo.methods.one_step import OneStepMethod
from dkdm_zoo.registry.options import NonNegativeFloat, PositiveInt
from dkdm_zoo.students.base import takes_condition_extras
from dkdm_zoo.students.one_step import InitFromTeacher, OneStepGenerator, init_from_teacher_weights
from dkdm_zoo.teachers.base import Condition, Teacher

Weighting = Literal["none", "inverse-step", "min-snr"]
TimeSampling = Literal["grid", "continuous"]


def signal_ddim_target(y_t: Tensor, noise: Tensor, eps_hat: Tensor, r_t: Tensor, r_s: Tensor) -> Tensor:
    """One teacher DDIM step t -> s in y-space: y_s = y_t + (r_t - r_s)(eps - e_hat)."""
    return y_t + (r_t - r_s) * (noise - eps_hat)


@dataclass(frozen=True)
class BOOTOptions(MethodOptions):
    num_steps: PositiveInt = 16  # teacher grid steps between T and 0 (at most T - 1)
    time_sampling: TimeSampling = "grid"
    weighting: Weighting = "min-snr"
    boundary_weight: NonNegativeFloat = 0.1
    boundary_every: PositiveInt = 1
    guidance_scale: float | None = None  # None: the teacher's own
    clip: bool | None = None  # None: the teacher's clip_sample
    init_from_teacher: InitFromTeacher = "auto"


class BOOT(OneStepMethod):
    """Data-free bootstrapping distillation into a one-step generator."""

    Options = BOOTOptions
    supports_flow = True  # the signal ODE of the flow path (alpha = 1 - s, sigma = s), see the module

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        self.options = o = BOOTOptions(**options)
        self.flow = teacher.spec.process == "flow"
        super().__init__(teacher, self.wrap_student(student, teacher, o.init_from_teacher))
        T = teacher.spec.num_train_timesteps
        if o.num_steps >= T:  # the one bound the teacher sets
            raise UserError(
                f"method.num_steps must be in 1..{T - 1} for this teacher (T = {T}), got {o.num_steps}"
            )
        num_steps, clip, guidance_scale = o.num_steps, o.clip, o.guidance_scale
        self.clip = teacher.spec.clip_sample if clip is None else clip
        if self.flow and self.clip:
            raise UserError(
                "method.clip: a flow-matching teacher's trajectory is not clipped; drop method.clip=true"
            )
        self.guidance_scale = guidance_scale
        if self.flow:  # the teacher's own N-step grid (shift included), s T from T down to 0, floats
            levels = teacher.schedule.sampling_sigmas(num_steps) * T
            self.t_grid, self.s_grid = levels[:-1].float(), levels[1:].float()
            self.delta = T / num_steps  # a float step on a flow path
        else:  # grid of teacher times (descending, "trailing": starts at T-1) ending at 0
            grid = sorted(set(inference_timesteps(T, num_steps)) | {0}, reverse=True)
            self.t_grid = torch.tensor(grid[:-1], dtype=torch.long)
            self.s_grid = torch.tensor(grid[1:], dtype=torch.long)
            self.delta = max(1, round(T / num_steps))  # step size of "continuous" time sampling
            # r_t = sigma_t / alpha_t (float32 is plenty: it only scales eps - e_hat)
            self.r = (
                teacher.schedule.sqrt_one_minus_alphas_cumprod / teacher.schedule.sqrt_alphas_cumprod
            ).float()
        if o.time_sampling == "grid":
            t_all, s_all = self.t_grid, self.s_grid
        else:
            t_all = torch.arange(1, T + 1 if self.flow else T)
            t_all = t_all.float() if self.flow else t_all
            s_all = (t_all - self.delta).clamp(min=0)
        # Weights are normalised to mean 1 under the time sampling, so the boundary weight keeps its meaning.
        self.weight_scale = 1.0 / self.pair_weight(t_all, s_all).mean().item()

    def pair_weight(self, t: Tensor, s: Tensor) -> Tensor:
        """Unnormalised loss weight of the pair (t, s).

        ``inverse-step`` divides by the step in log-SNR (the paper scales by the step size);
        ``min-snr`` is min(SNR_s, 1): y-space errors at small SNR barely move the teacher's input
        x_s = alpha_s y_s + sigma_s eps, and there the teacher's x0 (the target) is mostly noise.
        """
        kind = self.options.weighting
        if kind == "inverse-step":
            return 1.0 / (torch.log(self.ratio(t)) - torch.log(self.ratio(s)))
        if kind == "min-snr":
            return (1.0 / self.ratio(s) ** 2).clamp(max=1.0)
        return torch.ones(t.shape, device=t.device)

    def ratio(self, t: Tensor) -> Tensor:
        """r_t = sigma_t / alpha_t per sample (float32); on a flow path s / (1 - s), 1e12 at s = 1."""
        if self.flow:
            level = t.double() / self.teacher.spec.num_train_timesteps
            return (level / (1.0 - level).clamp(min=1e-12)).float()
        return self.r.to(t.device)[t]

    # -- the generator ----------------------------------------------------------------------------------
    @staticmethod
    def wrap_student(
        student: nn.Module, teacher: Teacher, init_from_teacher: InitFromTeacher = "auto"
    ) -> nn.Module:
        """The backbone as a OneStepGenerator, initialised from the teacher's weights if asked."""
        if isinstance(student, OneStepGenerator):
            return student
        init_from_teacher_weights(student, teacher, init_from_teacher)
        # samples are g(z, 0): the clean end, a float network time on a flow path
        clean_end = 0.0 if teacher.spec.process == "flow" else 0
        return OneStepGenerator.wrap(student, teacher.spec.channels, timestep=clean_end)

    # -- training ------------------------------------------------------------------------------------
    def _teacher_eps_x0(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor]:
        """Teacher eps and x0 along its DDIM trajectory (eps re-derived from a clipped x0, as DDIM does)."""
        pred = self.predict_teacher(x_t, t, cond, self.guidance_scale)
        if not self.clip:
            return pred.eps, pred.x0
        x0 = pred.x0.clamp(-self.teacher.spec.clip_sample_range, self.teacher.spec.clip_sample_range)
        return self.teacher.schedule.x0_to_eps(x_t, x0, t), x0

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        """Teacher-forward budget per process (samples, CFG counted twice): one forward for every
        target, plus one for the boundary on every ``boundary_every``-th step."""
        cost = self.teacher_cost(self.guidance_scale)
        boundary_steps = -(-steps // self.options.boundary_every) if self.options.boundary_weight > 0 else 0
        boundary_share = boundary_steps / max(steps, 1)
        return Plan(
            train_forwards=(steps + boundary_steps) * grad_accum * batch_size * cost,
            passes={
                "teacher": Passes(forward=(1 + boundary_share) * cost),
                # the target's no-grad forward, then the trained forward(s) and backward
                STUDENT: Passes(forward=2 + boundary_share, backward=1 + boundary_share),
            },
        )

    def _draw_times(self, n: int) -> tuple[Tensor, Tensor]:
        """Pairs s < t: uniform over the grid's pairs, or t uniform in 1..T-1 with s = max(t - delta, 0)."""
        rng_device = self.generator.device if self.generator is not None else "cpu"
        if self.options.time_sampling == "grid":
            pair = torch.randint(0, len(self.t_grid), (n,), generator=self.generator, device=rng_device).cpu()
            return self.t_grid[pair].to(self.device), self.s_grid[pair].to(self.device)
        T = self.teacher.spec.num_train_timesteps
        if self.flow:  # t uniform in (0, T]
            t = (1.0 - torch.rand(n, generator=self.generator, device=rng_device)).to(self.device) * T
        else:
            t = torch.randint(1, T, (n,), generator=self.generator, device=rng_device).to(self.device)
        return t, (t - self.delta).clamp(min=0)

    @torch.no_grad()
    def bootstrap_target(
        self, student: nn.Module, noise: Tensor, t: Tensor, s: Tensor, cond: Condition | None
    ) -> Tensor:
        """sg[g(eps, t)] advanced by one teacher DDIM step to s, in y-space (no gradient)."""
        sched = self.teacher.schedule
        kwargs = cond.model_kwargs(extras=takes_condition_extras(student)) if cond is not None else {}
        y_t = student(noise, t, **kwargs).float()
        x_t = sched.alpha(t, y_t) * y_t + sched.sigma(t, y_t) * noise
        eps_hat, x0_hat = self._teacher_eps_x0(x_t, t, cond)
        r_s = self.ratio(s).view(-1, 1, 1, 1)
        if self.flow:  # finite at s_t = 1 (alpha_t = 0), equal to the eps form below elsewhere
            return x0_hat - r_s * (noise - eps_hat)
        return signal_ddim_target(y_t, noise, eps_hat, self.ratio(t).view(-1, 1, 1, 1), r_s)

    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        noise = self.noise(batch_size)
        cond = self.conditions(batch_size)
        kwargs = cond.model_kwargs(extras=takes_condition_extras(student)) if cond is not None else {}
        t, s = self._draw_times(batch_size)

        target = self.bootstrap_target(student, noise, t, s, cond)

        with_boundary = step % self.options.boundary_every == 0 and self.options.boundary_weight > 0
        if with_boundary:
            # pure noise: the chain's last index, or s = 1 on a flow path
            T = torch.full_like(t, self.teacher.spec.num_train_timesteps - (0 if self.flow else 1))
            with torch.no_grad():
                _, f_T = self._teacher_eps_x0(noise, T, cond)
            # One student call for both branches keeps DDP to one forward per backward.
            both = student(torch.cat([noise, noise]), torch.cat([s, T]), **_repeat(kwargs)).float()
            y_s, y_T = both.chunk(2)
            boundary = ((y_T - f_T) ** 2).mean()
        else:
            y_s = student(noise, s, **kwargs).float()
            boundary = torch.zeros((), device=self.device)

        per_sample = ((y_s - target) ** 2).flatten(1).mean(1)
        bootstrap = (self.weight_scale * self.pair_weight(t, s) * per_sample).mean()
        loss = bootstrap + self.options.boundary_weight * boundary
        return loss, {"bootstrap_loss": bootstrap.detach(), "boundary_loss": boundary.detach()}


def _repeat(kwargs: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.cat([v, v]) for k, v in kwargs.items()}
