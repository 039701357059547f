"""The synthetic-dataset baseline, data training and the IDDPM vlb term."""

from __future__ import annotations

import math

import torch

from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.data import DataTraining
from dkdm_zoo.methods.losses import vlb_term
from dkdm_zoo.methods.synthetic import Synthetic
from dkdm_zoo.teachers.spec_only import load as spec_teacher
from tests.methods.tiny import T, tiny_student, tiny_teacher


def test_synthetic_generates_with_the_teachers_sampler_and_counts_forwards():
    teacher = tiny_teacher(num_classes=3)
    method = Synthetic(
        teacher, tiny_student(teacher.spec), num_samples=6, sampler="ddpm", sampler_steps=5, sample_batch=4
    )
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    assert method.samples.shape == (6, 1, 8, 8) and method.sample_refs.shape == (6,)
    assert method.teacher_forwards == 6 * 5 and method.teacher_calls == 2 * 5
    assert float(method.samples.abs().max()) <= 1.0 + 1e-5  # clip_sample teacher lands in [-1, 1]
    loss, logs = method.loss(method.student, 4, 0)
    assert torch.isfinite(loss) and "vb" not in logs
    state = method.state_dict()
    again = Synthetic(teacher, method.student, num_samples=6, sampler_steps=5)
    assert again.samples is None and again.teacher_forwards == 0
    again.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(1), 4, state=state))
    assert torch.equal(again.samples, method.samples) and again.teacher_forwards == 30


def test_data_training_on_digits_with_labels_and_vlb():
    teacher = spec_teacher(
        sample_shape=[1, 8, 8],
        conditioning="class",
        num_classes=10,
        num_train_timesteps=T,
        variance_type="learned_range",
    )
    student = tiny_student(teacher.spec)
    method = DataTraining(teacher, student, dataset="digits", cond_drop_prob=0.5)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    assert method.samples.shape[1:] == (1, 8, 8) and len(method.samples) > 1000
    assert method.sample_refs.max() == 9
    loss, logs = method.loss(student, 8, 0)
    loss.backward()
    assert torch.isfinite(loss) and logs["vb"] > 0 and method.teacher_forwards == 0
    assert abs(float(loss.detach()) - logs["mse"] - logs["vb"]) < 1e-5


def test_vlb_is_the_closed_form_kl_to_the_true_posterior():
    teacher = tiny_teacher(learned=True)
    sched = teacher.schedule
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([5, 12])
    x_t = sched.add_noise(x0, noise, t)
    var = torch.full_like(x0, -1.0)  # frac = 0: the posterior variance beta_tilde
    eps = noise.clone().requires_grad_(True)
    vb = vlb_term(sched, x0, x_t, t, eps, var)
    # true noise -> the model mean equals the posterior mean; same variance -> KL = 0
    assert torch.allclose(vb, torch.zeros(2), atol=1e-5)
    var2 = torch.zeros_like(x0, requires_grad=True)  # frac = 1/2
    vb2 = vlb_term(sched, x0, x_t, t, eps, var2)
    log_small = sched.posterior_log_variance_clipped[t].float()
    log_beta = torch.log(sched.betas[t]).float()
    d = log_small - (0.5 * log_beta + 0.5 * log_small)
    expected = 0.5 * (torch.exp(d) - 1 - d) / math.log(2) * (T / 1000)
    torch.testing.assert_close(vb2, expected, rtol=1e-4, atol=1e-7)
    vb2.sum().backward()
    assert eps.grad is None
    t0 = vlb_term(
        sched, x0, sched.add_noise(x0, noise, torch.tensor([0, 0])), torch.tensor([0, 0]), noise, var
    )
    assert torch.isfinite(t0).all() and (t0 > 0).all()  # decoder NLL at t = 0
