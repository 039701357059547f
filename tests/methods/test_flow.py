"""DKDM and the data baselines on a flow-matching teacher: the pool walks the teacher's own training
grid by Euler steps, students learn its velocity at its timesteps, and the run samples, exports and
chains as a flow model."""

from __future__ import annotations

import json

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from torch import nn
from typer.testing import CliRunner

import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline with diffusers
from dkdm_zoo.cli.app import create_app
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Run
from dkdm_zoo.runs.student import load_student
from dkdm_zoo.sampling.chain import sample_student
from dkdm_zoo.testing.tiny_teachers import T, flow_unet_teacher, tiny_unet

torch.set_num_threads(1)


class TeacherCopy(nn.Module):
    """The teacher's own network behind the student contract: a student that already knows the answer."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None):
        return self.unet(sample, timestep).sample


def test_the_chain_step_is_the_teachers_euler_step_on_its_training_grid():
    teacher = flow_unet_teacher()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=3.0)
    sigmas = scheduler.sigmas.flip(0).double()  # ascending: index T-1 is s = 1
    assert sigmas[-1] == 1.0
    torch.testing.assert_close(teacher.schedule.chain_times, sigmas * T)
    x = torch.randn(3, 1, 8, 8)
    k = torch.tensor([T - 1, 7, 0])
    x_prev, _ = teacher.chain_step(x, k)
    with torch.no_grad():
        v = teacher.unet(x, (sigmas[k] * T).float()).sample.double()
    s, s_prev = sigmas[k], torch.where(k > 0, sigmas[(k - 1).clamp(min=0)], torch.zeros(()))
    expected = x.double() + (s_prev - s).view(-1, 1, 1, 1) * v
    torch.testing.assert_close(x_prev.double(), expected, rtol=1e-5, atol=1e-5)


def test_dkdm_students_learn_the_velocity_at_the_teachers_timesteps():
    """A student that IS the teacher's network has zero DKDM loss: it is asked the teacher's question
    (the same timesteps s T) and graded against the teacher's velocity."""
    teacher = flow_unet_teacher()
    method = DKDM(teacher, TeacherCopy(teacher.unet), rho=0.1, pool_init_steps=2)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), batch_size=2, steps=3))
    for step in range(3):
        loss, logs = method.loss(method.student, 2, step)
        assert float(loss.detach()) < 1e-9, (step, float(loss.detach()))
    other = DKDM(teacher, TeacherCopy(tiny_unet(1, seed=5)), rho=0.1, pool_init_steps=2)
    other.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), batch_size=2, steps=1))
    assert float(other.loss(other.student, 2, 0)[0].detach()) > 1e-4  # the check above can fail


def test_a_flow_run_samples_exports_and_chains(tmp_path):
    folder = tmp_path / "flow"
    tiny_unet(1).save_pretrained(folder)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(folder)
    registry = build_registry(entry_points=False)
    app = create_app(registry)
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(folder), "--student", "unet", "--preset", "tiny", "--steps", "2"]
    args += [
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--set",
        "method.rho=0.002",
        "--set",
        "train.preview_every=0",
    ]
    result = CliRunner().invoke(app, [*args, "--set", "method.pool_init_steps=2", "--quiet"])
    assert result.exit_code == 0, result.output
    spec = Run(out).manifest.teacher_spec
    assert (spec.process, spec.student_prediction) == ("flow", "flow")

    # the exported pipeline (a FlowMatchEuler scheduler) samples as `dkdm-zoo sample` does
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "DKDMZooPipeline"
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    pipe = DiffusionPipeline.from_pretrained(out / "pipeline")
    student = load_student(Run(out), registry)
    schedule = registry.create("teachers", "ddpm-unet", path=str(folder)).schedule
    noise = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    ours = sample_student(student, spec, schedule, noise, {}, steps=4)
    with torch.no_grad():
        theirs = pipe._denoise(noise.clone(), {}, None, 4, 1.0, None)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and (images >= 0).all() and (images <= 1).all()

    # the run is a flow teacher of the next distillation
    chained = registry.create("teachers", "run", path=str(out))
    assert (chained.spec.process, chained.spec.prediction_type) == ("flow", "flow")
    grid = tmp_path / "g.png"
    result = CliRunner().invoke(app, ["sample", str(out), "--n", "2", "--steps", "3", "--out", str(grid)])
    assert result.exit_code == 0 and grid.is_file(), result.output


def test_sid_reads_a_flow_teacher_through_the_edm_view():
    """SiD and Diff-Instruct on a flow path: EDM sigma = s / (1 - s); a generator copied from the
    teacher starts as the teacher's own x0 prediction from pure noise at s_init."""
    from dkdm_zoo.methods.score_distill import DiffInstruct, SiD
    from dkdm_zoo.students.unet import UNetStudent

    teacher = flow_unet_teacher()

    def teacher_arch() -> (
        UNetStudent
    ):  # the teacher's UNet behind the student contract (weights copied by SiD)
        return UNetStudent.from_config(teacher.unet.config)

    schedule = teacher.schedule
    sigmas = torch.tensor([0.1, 2.5, 80.0])
    t = schedule.timesteps_for_sigmas(sigmas)
    torch.testing.assert_close(schedule.edm_sigma(t, torch.zeros(3)), sigmas)  # the inverse
    method = SiD(teacher, teacher_arch(), init_sigma=2.5)
    cfg = method.student.config
    s = 2.5 / 3.5
    assert cfg.prediction_type == "flow" and isinstance(cfg.timestep, float)
    assert (
        abs(cfg.timestep - s * T) < 1e-3
        and abs(cfg.input_scale - s) < 1e-6
        and abs(cfg.alpha - (1 - s)) < 1e-6
    )
    z = torch.randn(2, 1, 8, 8)
    x_in, t_gen = method.student.generator_input(z)
    torch.testing.assert_close(
        method.student.generate(z), teacher.predict(x_in, t_gen).x0, rtol=1e-5, atol=1e-5
    )

    for cls in (SiD, DiffInstruct):
        method = cls(teacher, teacher_arch())
        method.setup(
            SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), batch_size=2, steps=1)
        )
        nets = {name: network.module for name, network in method.networks().items()}
        for update in method.updates():
            loss, _ = method.update_loss(update.network, nets, 2, 0)
            loss.backward()
            assert torch.isfinite(loss), (cls.__name__, update.network)
