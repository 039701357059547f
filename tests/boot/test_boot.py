"""BOOT: the y-space DDIM step, the stop-gradient target, the boundary loss at teacher init, one-step sampling."""

from __future__ import annotations

import pytest
import torch
from diffusers import ConfigMixin, DDPMScheduler, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config

from dkdm_zoo.diffusion.schedule import NoiseSchedule
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.boot import BOOT, signal_ddim_target
from dkdm_zoo.students.one_step import OneStepGenerator, load_matching_weights
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
)


class ContractUNet(ModelMixin, ConfigMixin):
    """A UNet2DModel behind the student contract (same tensors as the teacher, under a prefix)."""

    @register_to_config
    def __init__(self, unet_config: dict):
        super().__init__()
        self.unet = UNet2DModel(**unet_config)

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None):
        return self.unet(sample, timestep, class_labels=class_labels).sample


def tiny_teacher(seed: int = 0, **scheduler) -> DDPMUNetTeacher:
    torch.manual_seed(seed)
    unet = UNet2DModel(**UNET_CONFIG)
    with torch.no_grad():  # random but non-trivial outputs
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return DDPMUNetTeacher(unet, dict(DDPMScheduler(num_train_timesteps=1000, **scheduler).config))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_y_space_step_equals_x_space_ddim(prediction_type):
    sched = NoiseSchedule.from_config(1000)
    g = torch.Generator().manual_seed(1)
    y_t, noise, out = (torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([900, 700, 500, 300, 100, 20])
    s = torch.tensor([850, 600, 499, 100, 0, 19])
    x_t = sched.alpha(t, y_t) * y_t + sched.sigma(t, y_t) * noise
    eps_hat, x0_hat = sched.to_eps_x0(out, x_t, t, prediction_type)
    x_s = sched.ddim_step(x_t, t, s, eps_hat)  # deterministic DDIM in x-space
    y_s_from_x = (x_s - sched.sigma(s, x_s) * noise) / sched.alpha(s, x_s)
    r = (sched.sqrt_one_minus_alphas_cumprod / sched.sqrt_alphas_cumprod).view(-1, 1, 1, 1)
    y_s = signal_ddim_target(y_t, noise, eps_hat, r[t], r[s])
    torch.testing.assert_close(y_s, y_s_from_x, rtol=1e-9, atol=1e-9)
    # the x0 form of the same step: y_s = y_t + (1 - r_s / r_t)(f - y_t)
    torch.testing.assert_close(y_s, y_t + (1 - r[s] / r[t]) * (x0_hat - y_t), rtol=1e-9, atol=1e-9)


def make_boot(teacher, init="auto", **options):
    backbone = ContractUNet(UNET_CONFIG)
    student = BOOT.wrap_student(backbone, teacher, init_from_teacher=init)
    method = BOOT(teacher, student, init_from_teacher=init, **options)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    return method, student


@pytest.mark.parametrize("weighting", ["none", "min-snr"])
def test_target_has_no_gradient_and_loss_gradient_flows_only_through_y_s(weighting):
    teacher = tiny_teacher()
    method, student = make_boot(teacher, init=False, boundary_weight=0.0, weighting=weighting)
    noise = torch.randn(4, 1, 8, 8)
    t, s = method.t_grid[:4], method.s_grid[:4]
    target = method.bootstrap_target(student, noise, t, s, None)
    assert not target.requires_grad

    torch.manual_seed(0)
    method.generator = torch.Generator().manual_seed(5)
    loss, _ = method.loss(student, 4, step=1)
    grads = torch.autograd.grad(loss, list(student.parameters()))
    # the same draws, by hand: w * ||g(eps, s) - sg[target]||^2
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn((4, 1, 8, 8), generator=gen)
    pair = torch.randint(0, len(method.t_grid), (4,), generator=gen)
    t, s = method.t_grid[pair], method.s_grid[pair]
    target = method.bootstrap_target(student, noise, t, s, None)
    weight = method.weight_scale * method.pair_weight(t, s)  # checked against closed forms below
    manual = (weight * ((student(noise, s) - target) ** 2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(loss, manual)
    for a, b in zip(grads, torch.autograd.grad(manual, list(student.parameters())), strict=True):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in teacher.unet.parameters())


def test_boundary_loss_at_teacher_initialisation_matches_theory():
    teacher = tiny_teacher(seed=3, clip_sample=False)
    method, student = make_boot(teacher, init=True, boundary_weight=1.0)
    for a, b in zip(
        student.backbone.unet.state_dict().values(), teacher.unet.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(11)
    method.generator = gen
    _, logs = method.loss(student, 8, step=0)
    # replay the draws: g(eps, T) is the teacher's eps output at x = eps; f_T = (eps - sigma_T e) / alpha_T
    gen = torch.Generator().manual_seed(11)
    noise = torch.randn((8, 1, 8, 8), generator=gen)
    T = torch.full((8,), 999)
    with torch.no_grad():
        e = teacher.unet(noise, T).sample
    sched = teacher.schedule
    f_T = (noise - sched.sigma(T, noise) * e) / sched.alpha(T, noise)
    expected = ((e - f_T) ** 2).mean().item()
    assert logs["boundary_loss"] == pytest.approx(expected, rel=1e-4)


def test_init_from_teacher_refuses_mismatched_architecture():
    teacher = tiny_teacher()
    other = ContractUNet({**UNET_CONFIG, "block_out_channels": (8, 8)})
    assert load_matching_weights(other, teacher.unet) < 1.0
    with pytest.raises(Exception, match="matches only"):
        BOOT.wrap_student(other, teacher, init_from_teacher=True)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    BOOT.wrap_student(other, teacher, init_from_teacher="auto")  # falls back to scratch, untouched
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_one_step_sampling_uses_exactly_one_evaluation_and_round_trips(tmp_path):
    teacher = tiny_teacher()
    method, student = make_boot(teacher)
    calls = []
    handle = student.backbone.register_forward_hook(lambda *_: calls.append(1))
    images = method.sample(student, 5, generator=torch.Generator().manual_seed(0))
    handle.remove()
    assert images.shape == (5, 1, 8, 8) and len(calls) == 1
    student.save_pretrained(tmp_path / "g")
    loaded = OneStepGenerator.from_pretrained(tmp_path / "g")
    noise = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded.generate(noise), student.generate(noise), rtol=0, atol=0)


def test_clipping_teacher_target_uses_clipped_x0():
    teacher = tiny_teacher(clip_sample=True)
    method, student = make_boot(teacher, init=False)
    assert method.clip
    noise = torch.randn(4, 1, 8, 8)
    T = torch.full((4,), 999)
    eps, x0 = method._teacher_eps_x0(noise, T, None)
    assert x0.abs().max() <= 1.0
    # eps re-derived from the clipped x0 reproduces x_t exactly
    sched = teacher.schedule
    torch.testing.assert_close(
        sched.alpha(T, noise) * x0 + sched.sigma(T, noise) * eps, noise, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("time_sampling", ["grid", "continuous"])
@pytest.mark.parametrize("weighting", ["none", "inverse-step", "min-snr"])
def test_pair_weights_follow_their_formula_and_average_one_under_the_time_sampling(weighting, time_sampling):
    teacher = tiny_teacher()
    method, _ = make_boot(teacher, init=False, weighting=weighting, time_sampling=time_sampling, num_steps=10)
    sched = teacher.schedule
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)  # float64 closed form, independent of method.r
    t, s = method._draw_times(20000)
    assert (s < t).all() and (s >= 0).all()
    raw = method.pair_weight(t, s).double()
    if weighting == "none":
        expected = torch.ones_like(raw)
    elif weighting == "inverse-step":  # 1 / (lambda_s - lambda_t), lambda = log(alpha / sigma) = log(SNR) / 2
        expected = 2.0 / (torch.log(snr[s]) - torch.log(snr[t]))
    else:
        expected = snr[s].clamp(max=1.0)
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=0)
    # normalised to mean one over the pairs actually drawn (a Monte Carlo check of the exact mean)
    assert (method.weight_scale * raw).mean().item() == pytest.approx(1.0, rel=0.05)


def test_time_sampling_draws_grid_pairs_or_delta_steps():
    teacher = tiny_teacher()
    grid, _ = make_boot(teacher, init=False, num_steps=10, time_sampling="grid")
    t, s = grid._draw_times(4000)
    pairs = set(zip(t.tolist(), s.tolist(), strict=True))
    assert pairs == {(999, 899), (899, 799), (799, 699), (699, 599), (599, 499), (499, 399), (399, 299),
                     (299, 199), (199, 99), (99, 0)}  # fmt: skip
    cont, _ = make_boot(teacher, init=False, num_steps=10, time_sampling="continuous")
    t, s = cont._draw_times(4000)
    assert t.min() >= 1 and t.max() <= 999 and len(set(t.tolist())) > 900
    torch.testing.assert_close(s, (t - 100).clamp(min=0))


def test_bad_boot_options_are_user_errors():
    teacher = tiny_teacher()
    for options, key in (({"weighting": "snr"}, "method.weighting"), ({"time_sampling": "random"}, "time_sampling"),
                         ({"num_steps": 1000}, "method.num_steps")):  # fmt: skip
        with pytest.raises(UserError, match=key):
            make_boot(teacher, init=False, **options)


@pytest.mark.parametrize(("boundary_weight", "boundary_every"), [(0.1, 1), (0.1, 2), (0.0, 1)])
def test_plan_counts_the_teacher_forwards_that_training_makes(boundary_weight, boundary_every):
    teacher = tiny_teacher()
    method, student = make_boot(
        teacher, init=False, boundary_weight=boundary_weight, boundary_every=boundary_every
    )
    for step in range(3):
        method.loss(student, 4, step)
    assert method.plan(4, 3).train_forwards == method.teacher_forwards


def test_the_target_of_a_class_conditional_latent_teacher_is_guided_by_hand():
    """CFG inside the target: eps = eps_u + w (eps_c - eps_u), in the teacher's latent space."""
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.testing.tiny_teachers import dit_teacher

    teacher = dit_teacher()
    assert teacher.spec.space == "latent" and teacher.guidance_scale == 2.0
    backbone = build_registry(entry_points=False).create("students", "dit", teacher.spec, preset="tiny")
    student = BOOT.wrap_student(backbone, teacher, init_from_teacher=False)
    method = BOOT(teacher, student, num_steps=4)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn((4, *teacher.spec.sample_shape), generator=gen)
    cond = teacher.sample_conditions(4, gen)
    t, s = method.t_grid, method.s_grid
    target = method.bootstrap_target(student, noise, t, s, cond)
    assert method.teacher_forwards == 8  # guided: two forwards per sample

    with torch.no_grad():
        y_t = student(noise, t, class_labels=cond.labels)
        sched, c = teacher.schedule, teacher.spec.channels
        x_t = sched.alpha(t, y_t) * y_t + sched.sigma(t, y_t) * noise
        eps_c = teacher.model_output(x_t, t, cond)[:, :c]
        eps_u = teacher.model_output(x_t, t, teacher.null_condition(4))[:, :c]
    eps = eps_u + 2.0 * (eps_c - eps_u)
    r = sched.sqrt_one_minus_alphas_cumprod / sched.sqrt_alphas_cumprod
    expected = y_t + (r[t] - r[s]).float().view(-1, 1, 1, 1) * (noise - eps)
    torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-5)
    unguided = BOOT(teacher, student, num_steps=4, guidance_scale=1.0).bootstrap_target(
        student, noise, t, s, cond
    )
    assert not torch.allclose(unguided, target, atol=1e-4)
    method.teacher_forwards = 0  # the plan counts both guided branches, for targets and boundary alike
    method.loss(student, 4, step=0)
    assert method.plan(4, 1).train_forwards == method.teacher_forwards == 16


# -- flow-matching teachers -------------------------------------------------------------------------
def flow_teacher(seed: int = 0, **scheduler) -> DDPMUNetTeacher:
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    unet = UNet2DModel(**UNET_CONFIG)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config = {
        **FlowMatchEulerDiscreteScheduler(**scheduler).config,
        "_class_name": "FlowMatchEulerDiscreteScheduler",
    }
    return DDPMUNetTeacher(unet, config)


def test_on_a_flow_teacher_the_target_is_its_own_euler_step_in_y_space_pure_noise_included():
    """target = (x_s - s eps) / (1 - s) with x_s diffusers' FlowMatchEuler step from x_t = (1 - t) y_t + t eps,
    on the teacher's own shifted grid, whose first pair starts at pure noise (alpha = 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    teacher = flow_teacher(shift=3.0)
    method, student = make_boot(teacher, init=False, num_steps=4)
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    reference.set_timesteps(4)
    torch.testing.assert_close(method.t_grid, reference.timesteps)  # the teacher's own grid
    assert method.t_grid[0] == 1000 and method.s_grid[-1] == 0

    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t, s = method.t_grid, method.s_grid
    target = method.bootstrap_target(student, noise, t, s, None)
    assert torch.isfinite(target).all()
    with torch.no_grad():
        y_t = student(noise, t).float()
        for i in range(4):  # diffusers' scheduler walks its grid one index per call
            level_t, level_s = float(t[i]) / 1000, float(s[i]) / 1000
            x_t = (1 - level_t) * y_t[i : i + 1] + level_t * noise[i : i + 1]
            velocity = teacher.unet(x_t, t[i : i + 1]).sample
            x_s = reference.step(velocity, t[i], x_t).prev_sample
            expected = (x_s - level_s * noise[i : i + 1]) / (1 - level_s)
            torch.testing.assert_close(target[i : i + 1], expected, rtol=1e-4, atol=1e-4)


def test_boot_trains_on_a_flow_teacher_and_samples_at_the_clean_end():
    teacher = flow_teacher()
    for time_sampling in ("grid", "continuous"):
        method, student = make_boot(teacher, init=False, num_steps=4, time_sampling=time_sampling)
        loss, logs = method.loss(student, 4, step=0)
        loss.backward()
        assert torch.isfinite(loss) and logs["boundary_loss"] > 0
        assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    x_in, t = student.generator_input(torch.randn(2, 1, 8, 8))
    assert t.dtype == torch.float32 and (t == 0).all()  # one call at s = 0, a float network time
    with pytest.raises(UserError, match="method.clip"):
        make_boot(teacher, init=False, clip=True)
