"""DKDM: the pool follows dynamic iterative distillation; losses and gradients are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.methods.losses import eps_loss_weights, teacher_student_kl
from tests.methods.tiny import T, UNetContract, scheduler_config, tiny_student, tiny_teacher


class Spy:
    """Records every teacher network call (batch size and timesteps) without changing it."""

    def __init__(self, teacher):
        self.calls: list[torch.Tensor] = []
        original = teacher.model_output

        def model_output(x, t, cond):
            self.calls.append(t.clone())
            return original(x, t, cond)

        teacher.model_output = model_output


def make(variant="dynamic", b=4, seed=0, learned=False, num_classes=None, **options):
    teacher = tiny_teacher(learned=learned, num_classes=num_classes)
    student = tiny_student(teacher.spec)
    method = DKDM(teacher, student, variant=variant, **options)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(seed), b))
    return teacher, student, method


def test_pool_init_ancestral_lands_on_stop_indices_and_counts_forwards():
    teacher, _, method = make(rho=0.4, pool_init="ancestral", pool_init_batch=8)
    n = round(0.4 * T) * 4
    assert method.pool.x.shape == (n, 1, 8, 8) and method.pool.k.shape == (n,)
    k = method.pool.k
    assert int(k.min()) >= 1 and int(k.max()) <= T - 1  # stop index uniform in 1..T-1
    assert len(set(k.tolist())) > 3
    # each slot took exactly T-1-stop ancestral steps, one teacher forward each
    assert method.teacher_forwards == int((T - 1 - k).sum()) == method.init_forwards
    assert method.teacher_calls >= math.ceil(method.teacher_forwards / 8)
    assert not method.pool.x.requires_grad


def test_pool_init_ddim_costs_at_most_pool_init_steps_per_slot():
    _, _, method = make(pool_init="ddim", pool_init_steps=3)
    k = method.pool.k
    assert int(k.min()) >= 1 and int(k.max()) <= T - 1
    assert method.teacher_forwards == int(np.clip(T - 1 - k, None, 3).sum())
    assert torch.isfinite(method.pool.x).all()


def test_each_step_one_teacher_forward_on_b_distinct_slots_advanced_by_one():
    teacher, student, method = make(b=4)
    spy = Spy(teacher)
    for step in range(5):
        k_before, x_before = method.pool.k.copy(), method.pool.x.clone()
        forwards_before = method.teacher_forwards
        loss, logs = method.loss(student, 4, step)
        assert torch.isfinite(loss)
        changed = np.nonzero(method.pool.k != k_before)[0]
        assert len(changed) == 4  # b distinct slots
        assert np.array_equal(method.pool.k[changed], k_before[changed] - 1)
        assert len(spy.calls) == step + 1 and len(spy.calls[-1]) == 4  # ONE forward of b samples
        assert sorted(spy.calls[-1].tolist()) == sorted(k_before[changed].tolist())  # at per-sample t
        assert method.teacher_forwards - forwards_before == 4
        untouched = torch.ones(len(k_before), dtype=torch.bool)
        untouched[torch.from_numpy(changed)] = False
        assert torch.equal(method.pool.x[untouched], x_before[untouched])


def test_finished_slots_reset_to_pure_noise_at_T_minus_1():
    teacher, student, method = make(b=4, rho=0.05)  # pool of round(0.05*20)*4 = 4 slots: all drawn
    assert len(method.pool.k) == 4
    method.pool.k[:] = 0
    spy = Spy(teacher)
    method.loss(student, 4, 0)
    assert spy.calls[-1].tolist() == [0, 0, 0, 0]  # t = 0 is trained on
    assert method.pool.k.tolist() == [-1] * 4  # finished: clean samples, never trained on
    method.loss(student, 4, 1)
    assert spy.calls[-1].tolist() == [T - 1] * 4  # reset to pure noise at T-1
    assert method.pool.k.tolist() == [T - 2] * 4


def test_iterative_variant_walks_one_batch_from_T_to_0_then_redraws():
    teacher, student, method = make(variant="iterative", b=3)
    assert method.teacher_forwards == 0 and method.pool.k.tolist() == [T - 1] * 3
    spy = Spy(teacher)
    for step in range(T + 1):
        method.loss(student, 3, step)
    ts = [c.tolist() for c in spy.calls]
    assert ts[:T] == [[T - 1 - i] * 3 for i in range(T)]  # all at the same t, down to 0
    assert ts[T] == [T - 1] * 3  # then re-drawn from noise


def test_shuffled_variant_advances_the_whole_pool_of_b():
    teacher, student, method = make(variant="shuffled", b=4, pool_init="ancestral")
    assert len(method.pool.k) == 4 and method.teacher_forwards == int((T - 1 - method.pool.k).sum())
    k_before = method.pool.k.copy()
    method.loss(student, 4, 0)
    assert np.array_equal(method.pool.k, k_before - 1)


def test_conditions_stored_per_slot_and_dropped_to_null():
    teacher, student, method = make(num_classes=3, cond_drop_prob=0.5)
    labels = method.pool.refs
    assert labels.shape == (len(method.pool.k),) and labels.dtype == np.int64 and int(labels.max()) < 3
    seen = []
    original = teacher.model_output
    teacher.model_output = lambda x, t, cond: (seen.append(cond.labels.clone()), original(x, t, cond))[1]
    for step in range(6):
        method.loss(student, 4, step)
    all_labels = torch.cat(seen)
    assert (all_labels == 3).any() and (all_labels < 3).any()  # null label = num_classes
    assert int(method.pool.refs.max()) < 3  # the stored conditions are never overwritten by null


def test_kl_is_zero_for_the_teachers_own_network_and_positive_otherwise():
    teacher, student, method = make(learned=True)
    same = UNetContract.from_config(teacher.unet.config)
    same.load_state_dict(teacher.unet.state_dict())
    loss, logs = method.loss(same, 4, 0)
    assert logs["mse"] < 1e-10 and abs(logs["kl"]) < 1e-6
    loss, logs = method.loss(student, 4, 1)
    assert logs["kl"] > 1e-4 and logs["mse"] > 0


def test_kl_matches_closed_form_and_trains_only_the_variance():
    teacher = tiny_teacher(learned=True)
    sched = teacher.schedule
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([1, 7, 15])
    eps = torch.randn_like(x)
    v_t, v_s = torch.full_like(x, 0.3), torch.full_like(x, -0.4)
    s_eps = eps.clone().requires_grad_(True)
    s_var = v_s.clone().requires_grad_(True)
    kl = teacher_student_kl(sched, x, t, eps, v_t, s_eps, s_var)
    # same mean: KL = 0.5 * (r - 1 - log r) with r = sigma_t^2 / sigma_s^2
    log_small = sched.posterior_log_variance_clipped[t].float()
    log_beta = torch.log(sched.betas[t]).float()
    lt = 0.65 * log_beta + 0.35 * log_small
    ls = 0.3 * log_beta + 0.7 * log_small
    expected = 0.5 * (torch.exp(lt - ls) - 1 - (lt - ls)) / math.log(2)
    torch.testing.assert_close(kl, expected, rtol=1e-5, atol=1e-7)
    kl.sum().backward()
    assert s_eps.grad is None  # student eps detached
    assert s_var.grad is not None and s_var.grad.abs().sum() > 0


def test_gradients_reach_only_the_student():
    teacher, student, method = make(learned=True)
    loss, _ = method.loss(student, 4, 0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.unet.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert not method.pool.x.requires_grad and method.pool.x.grad_fn is None


def test_state_roundtrip_restores_the_pool_without_reinitialising():
    teacher, student, method = make()
    method.loss(student, 4, 0)
    state = method.state_dict()
    other = DKDM(teacher, student)
    other.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(1), 4, state=state))
    assert torch.equal(other.pool.x, method.pool.x) and np.array_equal(other.pool.k, method.pool.k)
    assert other.teacher_forwards == method.teacher_forwards


def _predictions(sched, t):
    """x_t and two eps predictions at timesteps t, with their x0 and v through the schedule."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(len(t), 1, 8, 8, generator=gen, dtype=torch.float64)
    eps_a, eps_b = (torch.randn(x.shape, generator=gen, dtype=torch.float64) for _ in range(2))
    x0_a, x0_b = sched.eps_to_x0(x, eps_a, t), sched.eps_to_x0(x, eps_b, t)
    v_a, v_b = sched.velocity(x0_a, eps_a, t), sched.velocity(x0_b, eps_b, t)
    return eps_a - eps_b, x0_a - x0_b, v_a - v_b


def _per_sample(diff):
    return diff.pow(2).flatten(1).mean(dim=1)


def test_loss_weights_equal_the_mse_in_x0_and_v_space():
    """An eps MSE weighted by w_t is the MSE of the x0 (v) predictions the schedule converts them to."""
    sched = tiny_teacher().schedule
    t = torch.arange(T)
    d_eps, d_x0, d_v = _predictions(sched, t)
    acp = sched.alphas_cumprod.numpy()
    assert np.allclose(eps_loss_weights(acp, "eps"), 1.0)
    for target, diff in (("x0", d_x0), ("v", d_v)):
        weights = torch.from_numpy(eps_loss_weights(acp, target))
        torch.testing.assert_close(weights * _per_sample(d_eps), _per_sample(diff), rtol=1e-9, atol=0)


@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_weights_follow_hang_et_al_in_every_target_space(gamma):
    """min-SNR-gamma: min(SNR, gamma) on the x0 MSE, / SNR on eps, / (SNR + 1) on v (diffusers' SNR)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = tiny_teacher().schedule
    t = torch.arange(T)
    snr = compute_snr(DDPMScheduler.from_config(scheduler_config()), t).double()
    assert bool((snr > gamma).any() and (snr < gamma).any())  # both sides of the clip are tested
    clipped = snr.clamp(max=gamma)
    d_eps, d_x0, d_v = _predictions(sched, t)
    acp = sched.alphas_cumprod.numpy()
    expected = {"eps": clipped / snr * _per_sample(d_eps), "x0": clipped * _per_sample(d_x0),
                "v": clipped / (snr + 1) * _per_sample(d_v)}  # fmt: skip
    for target, value in expected.items():
        weights = torch.from_numpy(eps_loss_weights(acp, target, "min-snr", gamma))
        torch.testing.assert_close(weights * _per_sample(d_eps), value, rtol=1e-4, atol=0)  # float32 SNR
        torch.testing.assert_close(weights, clipped / snr, rtol=1e-4, atol=0)  # the same in eps terms


class Offset(torch.nn.Module):
    """The teacher's own network plus a constant: its eps error is known exactly."""

    def __init__(self, teacher, offset: float):
        super().__init__()
        self.net = UNetContract.from_config(teacher.unet.config)
        self.net.load_state_dict(teacher.unet.state_dict())
        self.offset = offset

    def forward(self, sample, timestep, **kwargs):
        return self.net(sample, timestep, **kwargs) + self.offset


@pytest.mark.parametrize(("target", "weighting"), [("eps", "none"), ("x0", "none"), ("v", "min-snr")])
def test_the_loss_is_the_weighted_mse_and_logs_the_plain_eps_mse(target, weighting):
    teacher, _, method = make(variant="shuffled", b=6, target=target, weighting=weighting, snr_gamma=2.0)
    k = torch.from_numpy(method.pool.k.copy()).long()  # shuffled: every slot, at its own timestep
    loss, logs = method.loss(Offset(teacher, 0.1), 6, 0)
    sched = teacher.schedule
    d_eps = torch.full((6, 1, 8, 8), 0.1, dtype=torch.float64)
    x = torch.zeros_like(d_eps)
    d_x0 = sched.eps_to_x0(x, d_eps, k) - sched.eps_to_x0(x, torch.zeros_like(d_eps), k)
    d_v = sched.velocity(d_x0, d_eps, k)  # v is linear in (x0, eps)
    acp = sched.alphas_cumprod[k]
    snr = acp / (1 - acp)
    w = snr.clamp(max=2.0) / {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[target]
    w = w if weighting == "min-snr" else torch.ones_like(snr)
    expected = (w * _per_sample({"eps": d_eps, "x0": d_x0, "v": d_v}[target])).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(
        logs["mse"].double(), torch.tensor(0.01, dtype=torch.float64), rtol=1e-4, atol=0
    )


def test_bad_options_are_user_errors():
    teacher = tiny_teacher()
    for option, value in (("target", "x1"), ("weighting", "snr"), ("snr_gamma", 0.0)):
        with pytest.raises(UserError, match=option):
            DKDM(teacher, tiny_student(teacher.spec), **{option: value})
    with pytest.raises(UserError, match="variant"):
        DKDM(teacher, tiny_student(teacher.spec), variant="nope")
    with pytest.raises(UserError, match="rho"):
        DKDM(teacher, tiny_student(teacher.spec), rho=0)
