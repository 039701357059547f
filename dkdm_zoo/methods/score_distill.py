"""Score distillation into a one-step generator, data-free: SiD (Zhou et al., ICML 2024) and
Diff-Instruct (Luo et al., NeurIPS 2023), on any teacher the project loads.

Three networks: the frozen teacher denoiser f_phi, a "fake score" denoiser f_psi (a trainable copy
of the teacher's network) that learns the generator's distribution, and the generator G (the
student, wrapped as a OneStepGenerator and initialised from the teacher when the architectures
match). Each training step first updates f_psi (``fake_score_steps`` times), then G.

Both papers use EDM denoisers D(x, sigma) on x = x0 + sigma eps. A discrete VP teacher maps over
exactly: sigma_t = sqrt((1 - abar_t) / abar_t), x_t^VP = alpha_t (x0 + sigma_t eps), and D is the
teacher's x0 prediction (from its eps / v / x0 output, guided when the teacher is). A continuous
sigma drawn as the papers do is rounded to the teacher's nearest timestep (in log sigma). A
flow-matching teacher maps over continuously: x_s = (1 - s)(x0 + sigma eps) with sigma = s / (1 - s),
D = x_s - s v, at timestep s T (SiD's flow-teacher setting).

- fake-score update (G frozen): x_g = G(z), t ~ p_fake, x_t = alpha x_g + s eps,
  L_psi = lambda(sigma_t) ||f_psi(x_t) - x_g||^2, lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2
- SiD generator update (both denoisers frozen, differentiated w.r.t. their input):
  L_G = w (f_phi - f_psi) . ((f_phi - x_g) - alpha_sid (f_phi - f_psi)), w = 1 / sg(mean |x_g - f_phi|)
- Diff-Instruct generator update (both denoisers under no_grad): L_G = (f_psi - f_phi) . x_g
All squared terms and dot products are means over pixels, then over the batch.

Few steps (``generator_steps = K``): the generator is called at K timesteps (``generator_timesteps``,
default: from the one-step generator's level down, or a flow teacher's own K-step grid), each later
call on the previous output re-noised with fresh
noise; x_g above is the output of a random step of the K (one per batch), its earlier steps simulated
without gradient (backward simulation, as DMD2 and few-step SiD train), in both updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from annotated_types import Interval
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import (
    STUDENT,
    Logs,
    MethodOptions,
    Network,
    Passes,
    Plan,
    Update,
)
from dkdm_zoo.methods.one_step import OneStepMethod
from dkdm_zoo.registry.options import NonNegativeFloat, PositiveFloat, PositiveInt, UnitInterval
from dkdm_zoo.students.base import takes_condition_extras
from dkdm_zoo.students.materialise import copy_network
from dkdm_zoo.students.one_step import (
    InitFromTeacher,
    OneStepGenerator,
    init_from_teacher_weights,
)
from dkdm_zoo.students.teacher_net import is_teacher_network, lora_copy, lora_network
from dkdm_zoo.teachers.base import Condition, Teacher

FAKE_SCORE = "fake_score"
TimeDistribution = Literal["lognormal", "edm-schedule", "uniform"]
# EDM's sampling-schedule constants (SiD draws the generator's sigma from this schedule).
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0


@dataclass(frozen=True)
class ScoreDistillOptions(MethodOptions):
    """What SiD and Diff-Instruct share: the generator's noise level, the fake score's updates and
    learning rates, the time distributions of both updates, guidance, and the start from the teacher."""

    init_sigma: PositiveFloat = 2.5  # the generator's input noise level (EDM sigma)
    fake_score_steps: PositiveInt = 1  # fake-score updates per generator update
    generator_lr: PositiveFloat | None = None  # None: train.lr
    fake_score_lr: PositiveFloat | None = None  # None: the generator's
    adam_beta1: UnitInterval = 0.0
    adam_beta2: UnitInterval = 0.999
    fake_time: TimeDistribution = "lognormal"
    generator_time: TimeDistribution = "lognormal"
    p_mean: float = -1.2
    p_std: PositiveFloat = 1.2
    t_max_fraction: Annotated[float, Interval(gt=0, le=1)] = 0.8
    sigma_data: PositiveFloat = 0.5
    guidance_scale: float | None = None  # None: the teacher's own
    fake_guidance_scale: float | None = 1.0
    init_from_teacher: InitFromTeacher = "auto"
    # K network calls per sample, trained by backward simulation (DMD2, few-step SiD)
    generator_steps: Annotated[int, Interval(ge=1, le=64)] = 1
    # the K step timesteps, noisiest first, as the teacher's network reads them (a VP chain's
    # integers, a flow teacher's s T); None: a VP chain's level at init_sigma and K - 1 evenly spaced
    # below it, a flow teacher's own K-step Euler grid
    generator_timesteps: tuple[NonNegativeFloat, ...] | None = None


@dataclass(frozen=True)
class SiDOptions(ScoreDistillOptions):
    alpha: float = 1.2  # SiD's weight of the fake-score term in the generator loss


@dataclass(frozen=True)
class DiffInstructOptions(ScoreDistillOptions):
    init_sigma: PositiveFloat = 1.0


class ScoreDistillation(OneStepMethod):
    """The shared machinery: networks, updates, time draws and the fake-score loss. The public
    methods (SiD, DiffInstruct) declare their options (``Options``) and the generator loss."""

    Options: type[ScoreDistillOptions] = ScoreDistillOptions
    supports_flow = True  # through the EDM view sigma = s / (1 - s) of the flow path (SiD's flow setting)

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        self.options = o = self.Options(**options)
        schedule = teacher.schedule
        times = generator_times(teacher, o)
        probe = torch.zeros(1, dtype=torch.float64)
        t_all = torch.tensor(times, dtype=torch.float64 if teacher.spec.process == "flow" else torch.long)
        alphas = [float(a) for a in schedule.alpha(t_all, probe.expand(len(times))).flatten()]
        sigmas = [float(v) for v in schedule.sigma(t_all, probe.expand(len(times))).flatten()]
        timestep, alpha, sigma = times[0], alphas[0], sigmas[0]
        steps = (
            {} if len(times) == 1 else {"step_timesteps": times, "step_alphas": alphas, "step_sigmas": sigmas}
        )
        fraction = 0.0
        if not isinstance(student, OneStepGenerator):
            fraction = init_from_teacher_weights(student, teacher, o.init_from_teacher)
        # A backbone copied from the teacher reads its output as the teacher does; a student of the
        # teacher (`--student teacher` converts to it) as eps, or the velocity on a flow path.
        copied_raw = fraction == 1.0 and not is_teacher_network(student)
        prediction = teacher.spec.prediction_type if copied_raw else teacher.spec.student_prediction
        generator = (
            student
            if isinstance(student, OneStepGenerator)
            else OneStepGenerator.wrap(
                student,
                teacher.spec.channels,
                input_scale=sigma,
                timestep=timestep,
                prediction_type=prediction,
                alpha=alpha,
                sigma=sigma,
                **steps,
            )
        )
        super().__init__(teacher, generator)
        # The fake score: a trainable float32 copy of the teacher's network (its other parts are shared);
        # beside a LoRA generator, LoRA adapters of its own on the same shared, frozen base.
        lora = lora_network(student)
        self.fake_net = (
            lora_copy(teacher.denoiser(), lora.config.lora)
            if lora is not None
            else copy_network(teacher.denoiser()).float().train().requires_grad_(True)
        )
        self.betas = (o.adam_beta1, o.adam_beta2)

    # -- the contract ------------------------------------------------------------------------------
    def networks(self) -> dict[str, Network]:
        fake_lr = (
            self.options.fake_score_lr
            if self.options.fake_score_lr is not None
            else self.options.generator_lr
        )
        return {
            STUDENT: Network(self.student, lr=self.options.generator_lr, betas=self.betas),
            FAKE_SCORE: Network(self.fake_net, lr=fake_lr, betas=self.betas),
        }

    def updates(self) -> tuple[Update, ...]:
        return (Update(FAKE_SCORE, self.options.fake_score_steps), Update(STUDENT))

    def update_loss(
        self, update: str, nets: Mapping[str, nn.Module], batch_size: int, step: int
    ) -> tuple[Tensor, Logs]:
        if update == FAKE_SCORE:
            return self.fake_score_loss(nets[FAKE_SCORE], nets[STUDENT], batch_size)
        if update == STUDENT:
            nets[FAKE_SCORE].eval()  # a frozen critic in this update (dropout off)
            return self.generator_loss(nets[STUDENT], nets[FAKE_SCORE], batch_size)
        raise NotImplementedError(f"{type(self).__name__} declares no update {update!r}")

    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        """The generator's loss against the current fake score (the student's update)."""
        return self.generator_loss(student, self.fake_net, batch_size)

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        cost = self.teacher_cost(self.options.guidance_scale)
        fake_cost = self.teacher_cost(self.options.fake_guidance_scale)
        k = self.options.fake_score_steps
        teacher_backward = cost if self.differentiates_scores else 0
        K = self.student.num_steps
        # generator calls per generation: a uniform step of the K, its earlier ones re-run
        simulated = (K + 1) / 2
        return Plan(
            train_forwards=steps * grad_accum * batch_size * cost,
            details={"fake_score_steps": k, "generator_steps": K},
            passes={
                "teacher": Passes(forward=cost, backward=teacher_backward),
                STUDENT: Passes(forward=(k + 1) * simulated, backward=1),
                FAKE_SCORE: Passes(
                    forward=k * fake_cost + fake_cost,
                    backward=k * fake_cost + (fake_cost if self.differentiates_scores else 0),
                ),
            },
        )

    #: whether the generator loss back-propagates through both denoisers (SiD) or not (Diff-Instruct)
    differentiates_scores = False

    # -- pieces --------------------------------------------------------------------------------------
    def draw_timesteps(self, n: int, distribution: TimeDistribution) -> Tensor:
        """Teacher timesteps for n samples: a continuous sigma drawn as the papers do, rounded."""
        gen = self.generator
        device = gen.device if gen is not None else self.device
        T = self.teacher.spec.num_train_timesteps
        if distribution == "uniform":  # a level of the teacher's chain, as its networks read it
            k = torch.randint(0, T, (n,), generator=gen, device=device).to(self.device)
            return self.teacher.schedule.time_of(k)
        if distribution == "lognormal":
            z = torch.randn((n,), generator=gen, device=device, dtype=torch.float64)
            sigma = torch.exp(self.options.p_mean + self.options.p_std * z)
        else:  # EDM's sampling schedule, its first t_max_fraction (from sigma_max down)
            u = (
                torch.rand((n,), generator=gen, device=device, dtype=torch.float64)
                * self.options.t_max_fraction
            )
            hi, lo = SIGMA_MAX ** (1 / RHO), SIGMA_MIN ** (1 / RHO)
            sigma = (hi + u * (lo - hi)) ** RHO
        return self.teacher.schedule.timesteps_for_sigmas(sigma).to(self.device)

    def generate_x0(self, generator: nn.Module, noise: Tensor, cond: Condition | None) -> Tensor:
        """x_g in the teacher's sample space: G(z) for one step; for K steps the output of a random
        step k (one per batch, drawn on the host), its k - 1 earlier steps run without gradient from
        the generator's own outputs re-noised with fresh noise (backward simulation: training sees
        the inputs sampling feeds it). Gradients flow through the last call when enabled."""
        kwargs = cond.model_kwargs(extras=takes_condition_extras(generator)) if cond is not None else {}
        steps = self.student.num_steps
        k = 0 if steps == 1 else int(self.host_rng.integers(steps))
        grad = torch.is_grad_enabled()
        x_in, t = self.student.generator_input(noise)
        x0 = Tensor()
        for j in range(k + 1):
            if j > 0:
                x_in, t = self.student.renoised(x0, j, self.noise(len(noise)))
            with torch.set_grad_enabled(grad and j == k):
                x0 = self.student.to_sample(generator(x_in, t, **kwargs).float(), x_in, j)
        return x0

    def noised(self, x0: Tensor, t: Tensor) -> Tensor:
        noise = torch.randn(x0.shape, generator=self.generator, device=x0.device)
        return self.teacher.schedule.add_noise(x0, noise, t)

    def fake_x0(self, fake: nn.Module, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        view = self.teacher.with_denoiser(fake)
        return view.denoise(x_t, t, cond, self.options.fake_guidance_scale).x0

    def fake_score_loss(self, fake: nn.Module, generator: nn.Module, batch_size: int) -> tuple[Tensor, Logs]:
        """Denoising score matching of the fake score on generator samples (G frozen)."""
        cond = self.conditions(batch_size)
        with torch.no_grad():
            x_g = self.generate_x0(generator, self.noise(batch_size), cond)
        t = self.draw_timesteps(batch_size, self.options.fake_time)
        x_t = self.noised(x_g, t)
        sigma = self.teacher.schedule.edm_sigma(t, x_g)
        weight = (sigma**2 + self.options.sigma_data**2) / (sigma * self.options.sigma_data) ** 2
        error = (self.fake_x0(fake, x_t, t, cond) - x_g) ** 2
        loss = (weight * error).flatten(1).mean(1).mean()
        return loss, {"fake_score_mse": error.detach().mean()}

    def generator_loss(self, generator: nn.Module, fake: nn.Module, batch_size: int) -> tuple[Tensor, Logs]:
        raise NotImplementedError


class SiD(ScoreDistillation):
    """Score identity Distillation: the generator loss back-propagates through both denoisers."""

    Options = SiDOptions
    options: SiDOptions
    differentiates_scores = True

    def generator_loss(self, generator: nn.Module, fake: nn.Module, batch_size: int) -> tuple[Tensor, Logs]:
        cond = self.conditions(batch_size)
        x_g = self.generate_x0(generator, self.noise(batch_size), cond)
        t = self.draw_timesteps(batch_size, self.options.generator_time)
        x_t = self.noised(x_g, t)
        real = self.predict_teacher(x_t, t, cond, self.options.guidance_scale, grad=True).x0
        fake_x0 = self.fake_x0(fake, x_t, t, cond)
        with torch.no_grad():
            dims = tuple(range(1, x_g.ndim))
            weight = 1.0 / (x_g - real).abs().mean(dim=dims, keepdim=True).clamp(min=1e-5)
        diff = real - fake_x0
        per_sample = (weight * diff * ((real - x_g) - self.options.alpha * diff)).flatten(1).mean(1)
        return per_sample.mean(), {"score_gap": (diff.detach() ** 2).mean()}


class DiffInstruct(ScoreDistillation):
    """Diff-Instruct: the integral-KL gradient (f_psi - f_phi) pushed through x_g only."""

    Options = DiffInstructOptions

    def generator_loss(self, generator: nn.Module, fake: nn.Module, batch_size: int) -> tuple[Tensor, Logs]:
        cond = self.conditions(batch_size)
        x_g = self.generate_x0(generator, self.noise(batch_size), cond)
        t = self.draw_timesteps(batch_size, self.options.generator_time)
        with torch.no_grad():
            x_t = self.noised(x_g, t)
            real = self.predict_teacher(x_t, t, cond, self.options.guidance_scale).x0
            fake_x0 = self.fake_x0(fake, x_t, t, cond)
        gap = fake_x0 - real
        loss = (gap * x_g).flatten(1).mean(1).mean()
        return loss, {"score_gap": (gap**2).mean()}


def generator_times(teacher: Teacher, options: ScoreDistillOptions) -> list[int | float]:
    """The K generator timesteps, noisiest first: the option's, else for K = 1 the timestep at
    ``init_sigma`` (the papers' one-step generator); for K > 1 on a VP chain that level and K - 1
    evenly spaced below it, on a flow teacher its own K-step Euler grid (from pure noise)."""
    spec, schedule, K = teacher.spec, teacher.schedule, options.generator_steps
    T = spec.num_train_timesteps
    flow = spec.process == "flow"
    given = options.generator_timesteps
    if given is not None:
        where = "method.generator_timesteps"
        if len(given) != K:
            raise UserError(
                f"{where} lists {len(given)} timesteps but method.generator_steps = {K}: give K of them"
            )
        if any(a <= b for a, b in zip(given, given[1:], strict=False)):
            raise UserError(f"{where} = {list(given)} must decrease (noisiest first)")
        if flow and not all(0 < v <= T for v in given):
            raise UserError(f"{where} = {list(given)}: a flow teacher's timesteps s T lie in (0, {T}]")
        if not flow and not all(float(v).is_integer() and 0 <= v < T for v in given):
            raise UserError(f"{where} = {list(given)}: a VP teacher's timesteps are integers in 0..{T - 1}")
        return [float(v) if flow else int(v) for v in given]
    if K > T:
        raise UserError(f"method.generator_steps = {K} exceeds the teacher's {T} timesteps")
    # the generator's input level: a VP chain's nearest timestep, or a flow teacher's s T
    t_init = schedule.timesteps_for_sigmas(torch.tensor([options.init_sigma]))
    if K == 1:
        return [float(t_init[0])] if flow else [int(t_init[0])]
    if flow:
        return [float(s) * T for s in schedule.sampling_sigmas(K)[:-1].tolist()]
    # a VP chain: the one-step generator's level, then K - 1 evenly spaced levels below it. Not the
    # teacher's own grid from T - 1 (DMD2's 999/749/499/249): an epsilon network read at alpha_{T-1}
    # (0.006 on a linear-beta chain) multiplies its error by 1/alpha into x0, and SiD diverged there
    # (digits-ddpm, K = 2 at 999/499: FD 115 after 800 steps where K = 1 reaches 3.4).
    start = int(t_init[0])
    if K > start:
        raise UserError(
            f"method.generator_steps = {K}: only {start} timesteps lie below method.init_sigma = "
            f"{options.init_sigma}; raise init_sigma or give method.generator_timesteps"
        )
    return [math.floor(start * (K - k) / K + 0.5) for k in range(K)]
