"""K-step generators for SiD and Diff-Instruct (``method.generator_steps = K``): the K timesteps,
K network calls replayed by hand, backward simulation replayed by hand, every family, and the
engine (train, resume bit-equal, `sample` and the exported pipeline in exactly K calls)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from typer.testing import CliRunner

import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline with diffusers
from dkdm_zoo.cli.app import create_app
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.score_distill import FAKE_SCORE, DiffInstruct, SiD
from dkdm_zoo.registry import build_registry
from dkdm_zoo.sampling.settings import SamplingSettings
from dkdm_zoo.testing.tiny_teachers import T, flow_unet_teacher
from tests.methods.test_score_distill import nets, perturb, same_architecture, tiny_family
from tests.methods.tiny import tiny_registry, tiny_teacher

METHODS = {"sid": SiD, "diff-instruct": DiffInstruct}


def make(cls, teacher, student=None, seed=0, **options):
    method = cls(teacher, student if student is not None else same_architecture(teacher), **options)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(seed), 4))
    return method


def count_calls(module: torch.nn.Module) -> list[bool]:
    """One entry per forward of ``module``: whether gradients were enabled."""
    calls: list[bool] = []
    module.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    return calls


def test_the_default_vp_timesteps_start_at_the_one_step_level_and_space_evenly_below_it():
    teacher = tiny_teacher()
    start = make(SiD, teacher).student.config.timestep  # the one-step generator's level (init_sigma)
    assert 8 <= start < T - 1
    for K in (2, 4, 8):
        cfg = make(SiD, teacher, generator_steps=K).student.config
        assert cfg.step_timesteps[0] == start and len(cfg.step_timesteps) == K
        gaps = [a - b for a, b in zip(cfg.step_timesteps, [*cfg.step_timesteps[1:], 0], strict=True)]
        assert max(gaps) - min(gaps) <= 1 and min(gaps) >= 1  # even to the nearest integer
        t = torch.tensor(cfg.step_timesteps)
        probe = torch.zeros(K, dtype=torch.float64)
        assert cfg.step_alphas == pytest.approx(teacher.schedule.alpha(t, probe).tolist())
        assert cfg.step_sigmas == pytest.approx(teacher.schedule.sigma(t, probe).tolist())
    one = make(SiD, teacher).student
    assert one.num_steps == 1 and one.config.step_timesteps is None  # K = 1: the one-step generator
    flow = flow_unet_teacher()
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=3.0)
    sched.set_timesteps(4)
    cfg = make(DiffInstruct, flow, student=copy.deepcopy(flow.unet), generator_steps=4).student.config
    assert cfg.step_timesteps == pytest.approx((sched.sigmas[:-1] * T).tolist())
    assert cfg.step_timesteps[0] == T and cfg.step_alphas[0] == 0.0  # pure noise first on a flow path


def test_explicit_timesteps_and_their_refusals():
    teacher = tiny_teacher()
    cfg = make(SiD, teacher, generator_steps=2, generator_timesteps=[15, 6]).student.config
    assert cfg.step_timesteps == [15, 6] and cfg.timestep == 15
    bad = [
        ({"generator_steps": 2, "generator_timesteps": [15]}, "lists 1 timesteps"),
        ({"generator_steps": 2, "generator_timesteps": [6, 15]}, "must decrease"),
        ({"generator_steps": 2, "generator_timesteps": [25, 6]}, "integers in 0..19"),
        ({"generator_steps": 2, "generator_timesteps": [15.5, 6]}, "integers in 0..19"),
        ({"generator_steps": 0}, "generator_steps"),
        ({"generator_steps": 40}, "exceeds"),
    ]
    for options, message in bad:
        with pytest.raises(UserError, match=message):
            SiD(teacher, same_architecture(teacher), **options)


@pytest.mark.parametrize("K", [2, 4])
def test_k_steps_are_k_calls_replayed_by_hand(K):
    """At initialisation every step is the teacher's x0 prediction; step k re-noises step k-1's output."""
    teacher = tiny_teacher()
    gen = make(SiD, teacher, generator_steps=K).student
    calls = count_calls(gen.backbone)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    fresh = torch.randn(K - 1, 3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    samples = gen.generate(z, step_noise=fresh)
    assert len(calls) == K
    cfg, sched = gen.config, teacher.schedule
    x, x0 = cfg.step_sigmas[0] * z, z
    for k, t_k in enumerate(cfg.step_timesteps):
        t = torch.full((3,), t_k)
        if k > 0:
            x = sched.add_noise(x0, fresh[k - 1], t)
        x0 = teacher.predict(x, t).x0
    torch.testing.assert_close(samples, x0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="step_noise"):
        gen.generate(z)


@pytest.mark.parametrize("name", ["sid", "diff-instruct"])
def test_backward_simulation_replayed_by_hand(name):
    """The fake-score update sees step k's output, its k earlier steps run without gradient from the
    generator's own re-noised outputs: the loss is replayed from the same random streams."""
    teacher = tiny_teacher()
    method = make(METHODS[name], teacher, seed=3, generator_steps=4)
    perturb(method.student.backbone, 0.02)  # the generator is no longer the teacher
    perturb(method.fake_net)
    method.generator = torch.Generator().manual_seed(11)
    host = copy.deepcopy(method.host_rng)
    calls = count_calls(method.student.backbone)
    loss, _ = method.update_loss(FAKE_SCORE, nets(method), 4, 0)

    k = int(host.integers(4))
    assert len(calls) == k + 1 and not any(calls)  # G frozen in the critic's update
    g = torch.Generator().manual_seed(11)
    gen, cfg = method.student, method.student.config
    with torch.no_grad():
        x = cfg.step_sigmas[0] * torch.randn((4, 1, 8, 8), generator=g)
        x_g = x
        for j in range(k + 1):
            t = torch.full((4,), cfg.step_timesteps[j])
            if j > 0:
                x = teacher.schedule.add_noise(x_g, torch.randn((4, 1, 8, 8), generator=g), t)
            x_g = teacher.schedule.eps_to_x0(x, gen.backbone(x, t), t)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn((4,), generator=g, dtype=torch.float64))
    t = teacher.schedule.timesteps_for_sigmas(sigma)
    x_t = teacher.schedule.add_noise(x_g, torch.randn(x_g.shape, generator=g), t)
    fake_x0 = teacher.schedule.eps_to_x0(x_t, method.fake_net(x_t, t).sample, t)
    s = teacher.schedule.edm_sigmas[t].float().view(-1, 1, 1, 1)
    manual = ((s**2 + 0.25) / (s * 0.5) ** 2 * (fake_x0 - x_g) ** 2).flatten(1).mean(1).mean()
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-6)

    # the generator's update: gradient through the last of its calls only
    seen = set()
    for _ in range(12):
        calls.clear()
        loss, _ = method.update_loss("student", nets(method), 4, 0)
        loss.backward()
        assert calls[-1] and not any(calls[:-1])
        seen.add(len(calls))
    assert seen == {1, 2, 3, 4}  # every step of the 4 is trained


@pytest.mark.parametrize("name", ["sid", "diff-instruct"])
@pytest.mark.parametrize("family", ["ddpm-unet", "dit", "latent-sd", "flow-unet"])
def test_two_steps_on_every_family(name, family, tmp_path):
    if family == "latent-sd":
        pytest.importorskip("transformers")
    teacher = tiny_family(family, tmp_path)
    student = build_registry(entry_points=False).create("students", "unet", teacher.spec, preset="tiny")
    method = make(METHODS[name], teacher, student, generator_steps=2)
    perturb(method.fake_net, 0.01)
    for update in method.updates():
        loss, _ = method.update_loss(update.network, nets(method), 2, 0)
        loss.backward()
        assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    assert method.teacher_forwards == method.plan(2, 1).train_forwards
    assert method.plan(2, 1).details["generator_steps"] == 2
    calls = count_calls(method.student.backbone)
    images = method.sample(method.student, 2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, *teacher.spec.image_shape) and len(calls) == 2


# -- through the engine -------------------------------------------------------------------------------
FAST = ["--set", "train.preview_every=0", "--set", "train.log_every=1", "--quiet"]


def distill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_app(tiny_registry()), ["distill", *args])
    return result.exit_code, result.output


def k_step_args(out: Path, steps: int, method: str = "sid", K: int = 4) -> list[str]:
    return [
        "--teacher", "tiny", "--student", "tiny-unet", "--method", method, "--steps", str(steps),
        "--batch-size", "4", "--out", str(out), "--set", f"method.generator_steps={K}",
        "--set", "train.checkpoint_every=2", "--set", "train.final_eval_samples=0", *FAST,
    ]  # fmt: skip


def test_a_k_step_run_resumes_bit_equal(tmp_path):
    code, out = distill(*k_step_args(tmp_path / "a", 4))
    assert code == 0, out
    code, out = distill(*k_step_args(tmp_path / "b", 2))
    assert code == 0, out
    code, out = distill("--out", str(tmp_path / "b"), "--resume", "--steps", "4", *FAST)
    assert code == 0, out
    ckpt = "checkpoints/checkpoint-0000004"
    for name in ("student.safetensors", "fake_score.safetensors"):
        a, b = load_file(str(tmp_path / "a" / ckpt / name)), load_file(str(tmp_path / "b" / ckpt / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["sid", "diff-instruct"])
def test_sample_and_the_exported_pipeline_take_exactly_k_calls_and_agree(tmp_path, method):
    from dkdm_zoo.generation.sources import load_source

    run = tmp_path / "run"
    code, out = distill(*k_step_args(run, 2, method, K=2))
    assert code == 0, out
    source = load_source(str(run), tiny_registry(), device="cpu")
    calls = count_calls(source.generator.backbone)
    images, _ = source.generate(3, SamplingSettings(batch_size=3, seed=4), progress=False)
    assert calls == [False, False] and images.shape == (3, 1, 8, 8)
    again, _ = source.generate(3, SamplingSettings(batch_size=1, seed=4), progress=False)
    torch.testing.assert_close(images, again)  # per-image noise: the batch size changes nothing

    pipe = DiffusionPipeline.from_pretrained(run / "pipeline")
    pipe_calls = count_calls(pipe.student.backbone)
    exported = pipe(batch_size=3, num_inference_steps=50, generator=torch.Generator().manual_seed(4))
    assert len(pipe_calls) == 2  # K calls, whatever num_inference_steps says
    pixels = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in exported.images])
    reference = ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(pixels.reshape(reference.shape), reference, atol=1 / 255 + 1e-6)
    card = ModelCard.load(run / "pipeline/README.md")
    assert "2-step" in card.data.tags and "2-step generator" in card.text
    steps = source.generator.config.step_timesteps
    assert len(steps) == 2 and steps[0] > steps[1] > 0
    assert f"| network calls per image | 2 (timesteps {steps}) |" in card.text
    config = json.loads((run / "pipeline/student/config.json").read_text())
    assert config["step_timesteps"] == steps
    # an evaluation report records K network calls per image
    from dkdm_zoo.evaluation.report import timed_generate

    _, _, info = timed_generate(source, 2, SamplingSettings(steps=50), progress=False)
    assert info["nfe_per_image"] == 2 and info["steps"] == 2
