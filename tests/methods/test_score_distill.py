"""SiD and Diff-Instruct: the VP <-> EDM mapping, both losses replayed by hand, teacher
initialisation, every teacher family, and the engine (two networks, resume bit-equal)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.diffusion.schedule import NoiseSchedule
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.score_distill import FAKE_SCORE, RHO, SIGMA_MAX, SIGMA_MIN, DiffInstruct, SiD
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Run
from dkdm_zoo.sampling.settings import SamplingSettings
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher
from tests.methods.tiny import UNetContract, scheduler_config, tiny_registry, tiny_teacher, tiny_unet

METHODS = {"sid": SiD, "diff-instruct": DiffInstruct}


def same_architecture(teacher) -> UNetContract:
    """A student of the teacher's own architecture, randomly initialised (not the teacher's weights)."""
    torch.manual_seed(123)
    return UNetContract.from_config(teacher.unet.config)


def make(cls, teacher, student=None, seed=0, **options):
    method = cls(teacher, student if student is not None else same_architecture(teacher), **options)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(seed), 4))
    return method


def nets(method):
    return {name: network.module for name, network in method.networks().items()}


def perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_sigma_to_timestep_is_the_nearest_in_log_sigma():
    sched = NoiseSchedule.from_config(1000)
    table = torch.sqrt((1 - sched.alphas_cumprod) / sched.alphas_cumprod)
    torch.testing.assert_close(sched.edm_sigmas, table)
    sigmas = torch.exp(torch.linspace(-8, 8, 301, dtype=torch.float64))
    expected = (torch.log(table)[None, :] - torch.log(sigmas)[:, None]).abs().argmin(dim=1)
    assert torch.equal(sched.timesteps_for_sigmas(sigmas), expected)
    # the VP sample at t is alpha_t times the EDM sample x0 + sigma_t eps
    x0, eps, t = (
        torch.randn(3, 2, dtype=torch.float64),
        torch.randn(3, 2, dtype=torch.float64),
        torch.tensor([5, 400, 990]),
    )
    torch.testing.assert_close(
        sched.add_noise(x0, eps, t) / sched.alpha(t, x0), x0 + table[t].view(-1, 1) * eps
    )


@pytest.mark.parametrize("name", ["sid", "diff-instruct"])
def test_generator_and_fake_score_start_from_the_teacher(name):
    teacher = tiny_teacher()
    method = make(METHODS[name], teacher)
    backbone = method.student.backbone.state_dict()
    for key, value in teacher.unet.state_dict().items():
        assert torch.equal(backbone[key], value) and torch.equal(method.fake_net.state_dict()[key], value)
    assert all(p.requires_grad for p in method.fake_net.parameters())
    assert not any(p.requires_grad for p in teacher.unet.parameters())
    # G(z) is the teacher's x0 prediction from s_t z at t_init, sigma_t(t_init) nearest init_sigma
    cfg = method.student.config
    init_sigma = {"sid": 2.5, "diff-instruct": 1.0}[name]
    sigmas = teacher.schedule.edm_sigmas
    assert cfg.timestep == int((torch.log(sigmas) - torch.log(torch.tensor(init_sigma))).abs().argmin())
    z = torch.randn(3, 1, 8, 8)
    t = torch.full((3,), cfg.timestep)
    x_in = teacher.schedule.sigma(t, z) * z
    assert cfg.input_scale == pytest.approx(float(teacher.schedule.sigma(t, z)[0]))
    expected = teacher.predict(x_in, t).x0
    torch.testing.assert_close(method.student.generate(z), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["sid", "diff-instruct"])
def test_at_initialisation_the_generator_loss_and_its_gradient_vanish(name):
    """fake score == teacher: no score gap, so nothing moves the generator."""
    method = make(METHODS[name], tiny_teacher())
    loss, logs = method.update_loss("student", nets(method), 4, 0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logs["score_gap"]) == 0.0
    at_init = max(float(p.grad.abs().max()) for p in method.student.parameters())
    # the same step against a perturbed critic moves the generator (rounding aside, nothing else does)
    method.student.zero_grad()
    perturb(method.fake_net)
    loss, _ = method.update_loss("student", nets(method), 4, 0)
    loss.backward()
    perturbed = max(float(p.grad.abs().max()) for p in method.student.parameters())
    assert at_init < 1e-6 * perturbed


def test_fake_score_loss_replayed_by_hand():
    teacher = tiny_teacher()
    method = make(SiD, teacher, seed=3)
    perturb(method.fake_net)
    method.generator = torch.Generator().manual_seed(11)
    loss, _ = method.update_loss(FAKE_SCORE, nets(method), 4, 0)

    g = torch.Generator().manual_seed(11)
    z = torch.randn((4, 1, 8, 8), generator=g)
    with torch.no_grad():
        x_g = method.student.generate(z)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn((4,), generator=g, dtype=torch.float64))
    t = teacher.schedule.timesteps_for_sigmas(sigma)
    x_t = teacher.schedule.add_noise(x_g, torch.randn(x_g.shape, generator=g), t)
    out = method.fake_net(x_t, t).sample  # eps prediction of the fake copy
    fake_x0 = teacher.schedule.eps_to_x0(x_t, out, t)
    s = teacher.schedule.edm_sigmas[t].float().view(-1, 1, 1, 1)
    weight = (s**2 + 0.25) / (s * 0.5) ** 2
    manual = (weight * (fake_x0 - x_g) ** 2).flatten(1).mean(1).mean()
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "generator_time"),
    [("sid", "lognormal"), ("sid", "edm-schedule"), ("diff-instruct", "lognormal")],
)
def test_generator_loss_and_gradients_replayed_by_hand(name, generator_time):
    teacher = tiny_teacher()
    method = make(METHODS[name], teacher, seed=5, generator_time=generator_time)
    perturb(method.fake_net)
    method.generator = torch.Generator().manual_seed(13)
    loss, _ = method.update_loss("student", nets(method), 4, 0)
    params = list(method.student.parameters())
    grads = torch.autograd.grad(loss, params)

    g = torch.Generator().manual_seed(13)
    z = torch.randn((4, 1, 8, 8), generator=g)
    cfg = method.student.config
    x_in = cfg.input_scale * z
    x_g = (x_in - cfg.sigma * method.student(x_in, torch.full((4,), cfg.timestep))) / cfg.alpha
    if generator_time == "edm-schedule":  # EDM sampling schedule, its first 80%, from sigma_max down
        u = torch.rand((4,), generator=g, dtype=torch.float64) * 0.8
        sigma = (SIGMA_MAX ** (1 / RHO) + u * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO
    else:  # EDM's training distribution: ln sigma ~ N(-1.2, 1.2^2)
        sigma = torch.exp(-1.2 + 1.2 * torch.randn((4,), generator=g, dtype=torch.float64))
    t = teacher.schedule.timesteps_for_sigmas(sigma)
    x_t = teacher.schedule.add_noise(x_g, torch.randn(x_g.shape, generator=g), t)
    sched = teacher.schedule
    method.fake_net.eval()
    if name == "sid":
        real = sched.eps_to_x0(x_t, teacher.unet(x_t, t).sample, t)
        fake = sched.eps_to_x0(x_t, method.fake_net(x_t, t).sample, t)
        w = 1.0 / (x_g - real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-5).detach()
        manual = (w * (real - fake) * ((real - x_g) - 1.2 * (real - fake))).flatten(1).mean(1).mean()
    else:
        with torch.no_grad():
            real = sched.eps_to_x0(x_t, teacher.unet(x_t, t).sample, t)
            fake = sched.eps_to_x0(x_t, method.fake_net(x_t, t).sample, t)
        manual = ((fake - real) * x_g).flatten(1).mean(1).mean()
    torch.testing.assert_close(loss, manual, rtol=1e-4, atol=1e-7)
    for a, b in zip(grads, torch.autograd.grad(manual, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-7)
    assert all(p.grad is None for p in teacher.unet.parameters())


def v_prediction_teacher() -> DDPMUNetTeacher:
    return DDPMUNetTeacher(tiny_unet(), scheduler_config(prediction_type="v_prediction"))


def test_a_v_prediction_generator_reads_its_output_as_v():
    teacher = v_prediction_teacher()
    method = make(SiD, teacher)
    assert method.student.config.prediction_type == "v_prediction"
    z = torch.randn(2, 1, 8, 8)
    t = torch.full((2,), method.student.config.timestep)
    x_in = method.student.config.input_scale * z
    torch.testing.assert_close(method.student.generate(z), teacher.predict(x_in, t).x0, rtol=1e-4, atol=1e-5)


def tiny_family(family: str, tmp: Path):
    from dkdm_zoo.testing.tiny_teachers import TINY_TEACHERS

    if family == "v-prediction":
        return v_prediction_teacher()
    return TINY_TEACHERS[family][0](tmp, build_registry(entry_points=False))


@pytest.mark.parametrize("name", ["sid", "diff-instruct"])
@pytest.mark.parametrize("family", ["ddpm-unet", "dit", "latent-sd", "run", "v-prediction"])
def test_one_step_of_every_update_on_every_family(name, family, tmp_path):
    """Learned variance (dit), guidance (dit, latent-sd), text (latent-sd), latent space, v-prediction."""
    if family == "latent-sd":
        pytest.importorskip("transformers")
    teacher = tiny_family(family, tmp_path)
    student = build_registry(entry_points=False).create("students", "unet", teacher.spec, preset="tiny")
    method = make(METHODS[name], teacher, student)
    perturb(method.fake_net, 0.01)  # as after a first critic update: a score gap to learn from
    modules = nets(method)
    for update in method.updates():
        loss, _ = method.update_loss(update.network, modules, 2, 0)
        loss.backward()
        assert torch.isfinite(loss)
    assert all(p.grad is not None for p in method.fake_net.parameters() if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    assert not any(p.grad is not None for m in teacher.modules() for p in m.parameters())
    # the plan counts what the steps did: one guided (x2) or plain teacher forward per sample
    assert method.teacher_forwards == method.plan(2, 1).train_forwards
    images = method.sample(method.student, 2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, *teacher.spec.image_shape)


def test_options_are_checked():
    teacher = tiny_teacher()
    with pytest.raises(UserError, match="fake_score_steps"):
        SiD(teacher, same_architecture(teacher), fake_score_steps=0)
    with pytest.raises(UserError, match="generator_time"):
        DiffInstruct(teacher, same_architecture(teacher), generator_time="later")
    with pytest.raises(UserError, match="no network"):
        from dkdm_zoo.testing.tiny_teachers import spec_teacher

        SiD(spec_teacher(), same_architecture(teacher))


# -- through the engine -------------------------------------------------------------------------------
FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]


def distill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(tiny_registry()), ["distill", *args])
    return result.exit_code, result.output


def sid_args(out: Path, steps: int) -> list[str]:
    return [
        "--teacher", "tiny", "--student", "tiny-unet", "--method", "sid", "--steps", str(steps),
        "--batch-size", "4", "--out", str(out), "--set", "method.fake_score_steps=2",
        "--set", "method.fake_score_lr=3e-4", "--set", "train.checkpoint_every=2", *FAST,
    ]  # fmt: skip


def test_engine_trains_both_networks_and_resumes_bit_equal(tmp_path):
    code, out = distill(*sid_args(tmp_path / "a", 4))
    assert code == 0, out
    code, out = distill(*sid_args(tmp_path / "b", 2))
    assert code == 0, out
    code, out = distill("--out", str(tmp_path / "b"), "--resume", "--steps", "4", *FAST)
    assert code == 0, out
    ckpt = "checkpoints/checkpoint-0000004"
    for name in ("student.safetensors", "fake_score.safetensors"):
        a, b = load_file(str(tmp_path / "a" / ckpt / name)), load_file(str(tmp_path / "b" / ckpt / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(str(tmp_path / "a/checkpoints/checkpoint-0000002/fake_score.safetensors"))
    last = load_file(str(tmp_path / "a" / ckpt / "fake_score.safetensors"))
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the fake score trains
    records = [r for r in Run(tmp_path / "a").read_metrics() if "loss" in r]
    assert {"fake_score_loss", "lr_fake_score", "score_gap"} <= set(records[-1])
    assert records[-1]["lr_fake_score"] == pytest.approx(3e-4)
    # one guided-or-plain teacher forward per generator sample: 4 steps x 4 samples
    assert records[-1]["teacher_forwards"] == 16
    assert (tmp_path / "a/student/config.json").is_file()


def test_dry_run_counts_every_networks_passes(tmp_path):
    code, out = distill(
        "--teacher", "tiny", "--student", "tiny-unet", "--method", "sid", "--steps", "10", "--batch-size", "4",
        "--set", "method.fake_score_steps=3", "--dry-run",
    )  # fmt: skip
    assert code == 0, out
    assert "fake_score" in out and "training 40" in out


def test_the_exported_generator_samples_in_one_call(tmp_path):
    from dkdm_zoo.generation.sources import load_source

    code, out = distill(*sid_args(tmp_path / "run", 2))
    assert code == 0, out
    source = load_source(str(tmp_path / "run"), tiny_registry(), device="cpu")
    calls = []
    source.generator.backbone.register_forward_hook(lambda *_: calls.append(1))
    images, _ = source.generate(5, SamplingSettings(batch_size=5), progress=False)
    assert images.shape == (5, 1, 8, 8) and calls == [1]
