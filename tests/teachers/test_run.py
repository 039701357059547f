"""`run`: a hand-built run directory with a tiny ModelMixin student, used as a teacher."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ConfigMixin, DiTPipeline, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Manifest, Run
from dkdm_zoo.runs.student import save_student
from dkdm_zoo.sampling.chain import sample_loop
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.run import RunTeacher, from_run

from .tiny import ddpm_scheduler, save_pipeline, tiny_dit, tiny_unet, tiny_vae


class TinyStudent(ModelMixin, ConfigMixin):
    """The student contract around a UNet2DModel: student(x, t, class_labels=None, encoder_hidden_states=None)."""

    @register_to_config
    def __init__(
        self, channels: int = 3, out_channels: int = 3, sample_size: int = 8, num_classes: int | None = None
    ):
        super().__init__()
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=channels,
            out_channels=out_channels,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            num_class_embeds=num_classes + 1 if num_classes else None,
        )

    def forward(self, x, t, class_labels=None, encoder_hidden_states=None):
        return self.unet(x, t, class_labels=class_labels).sample


def make_run(folder, teacher_name, teacher_options, spec, student, *, one_step=False):
    run = Run(folder)
    run.write_manifest(
        Manifest(
            teacher=teacher_name,
            teacher_options=teacher_options,
            teacher_spec=spec,
            student="unet",
            student_class=f"{__name__}:TinyStudent",
            method="dkdm",
            student_preset="tiny",
            one_step=one_step,
        )
    )
    save_student(run, student)
    return folder


def load(path, **options):
    return from_run(Run(path), REGISTRY, **options)


REGISTRY = build_registry()


def test_run_teacher_predictions_and_sampling(tmp_path):
    from dkdm_zoo.teachers.ddpm_unet import load as load_unet

    original = save_pipeline(
        tmp_path / "orig",
        tiny_unet(out_channels=6),
        ddpm_scheduler(variance_type="learned_range", prediction_type="v_prediction"),
    )
    spec = load_unet(path=str(original)).spec
    torch.manual_seed(0)
    student = TinyStudent(out_channels=6).eval()
    run = make_run(tmp_path / "run", "ddpm-unet", {"path": str(original)}, spec, student)
    assert Run(run).manifest.teacher == "ddpm-unet"

    teacher = REGISTRY.create("teachers", "run", path=str(run))
    assert isinstance(teacher, RunTeacher)
    assert teacher.spec.prediction_type == "epsilon" and teacher.spec.family == "run"
    assert teacher.spec.variance_type == "learned_range" and teacher.spec.sample_shape == spec.sample_shape
    assert not any(p.requires_grad for p in teacher.student.parameters())

    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 300, 999])
    with torch.no_grad():
        out = student(x, t)
    pred = teacher.predict(x, t)
    torch.testing.assert_close(pred.eps, out[:, :3])
    torch.testing.assert_close(pred.var_values, out[:, 3:])
    torch.testing.assert_close(pred.x0, teacher.schedule.eps_to_x0(x, out[:, :3], t))
    assert teacher._original is None  # a pixel, unconditional run never builds its original teacher
    torch.testing.assert_close(teacher.decode(x), x)

    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = teacher.sample(2, steps=5, sampler="ddpm", noise=noise, generator=torch.Generator().manual_seed(3))

    def eps_fn(x, t):
        with torch.no_grad():
            o = student(x, t)
        return o[:, :3], o[:, 3:]

    ref = sample_loop(
        eps_fn,
        teacher.schedule,
        noise,
        steps=5,
        sampler="ddpm",
        variance_type="learned_range",
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(ours, ref)


def test_latent_class_run_reuses_the_original_teacher_lazily(tmp_path):
    from dkdm_zoo.teachers.dit import load as load_dit

    original = tmp_path / "dit"
    vae = tiny_vae()
    DiTPipeline(transformer=tiny_dit(), vae=vae, scheduler=ddpm_scheduler()).save_pretrained(original)
    spec = load_dit(path=str(original)).spec
    torch.manual_seed(1)
    student = TinyStudent(channels=4, out_channels=8, num_classes=spec.num_classes).eval()
    run = make_run(tmp_path / "run", "dit", {"path": str(original)}, spec, student)
    teacher = load(path=str(run), guidance_scale=2.0)
    assert teacher.spec.space == "latent" and teacher.spec.conditioning == "class"

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([5, 700])
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        e_c = student(x, t, class_labels=labels)[:, :4]
        e_u = student(x, t, class_labels=torch.full_like(labels, spec.num_classes))[:, :4]
    guided = teacher.predict(x, t, teacher.make_condition(labels=labels))
    torch.testing.assert_close(guided.eps, e_u + 2.0 * (e_c - e_u), rtol=1e-5, atol=1e-5)

    assert teacher._original is None
    images = teacher.decode(x)
    assert teacher._original is not None
    torch.testing.assert_close(images, vae.decode(x / vae.config.scaling_factor).sample.clamp(-1, 1))


def test_run_errors(tmp_path):
    with pytest.raises(UserError, match="not a dkdm-zoo run directory"):
        load(path=str(tmp_path))
    torch.manual_seed(0)
    run = make_run(
        tmp_path / "boot", "ddpm-unet", {}, TeacherSpec(sample_shape=(3, 8, 8)), TinyStudent(), one_step=True
    )
    with pytest.raises(UserError, match="one-step"):
        load(path=str(run))
    data = json.loads((run / "run.json").read_text())
    data["one_step"] = False
    data["student"]["class"] = "torch.nn:Linear"
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a diffusers ModelMixin"):
        load(path=str(run))
    data["format_version"] = 99
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="format_version"):
        load(path=str(run))
    with pytest.raises(UserError, match="needs 'student'"):
        Manifest.from_dict({"format_version": 1, "teacher": {"name": "x", "options": {}}}, tmp_path / "bad")


def test_boot_from_a_run_teacher_starts_from_the_runs_student(tmp_path):
    """Chaining DKDM -> BOOT: the one-step generator of the same architecture copies the run's student."""
    from dkdm_zoo.methods.boot import BOOT
    from dkdm_zoo.teachers.ddpm_unet import load as load_unet

    original = save_pipeline(tmp_path / "orig", tiny_unet(), ddpm_scheduler())
    spec = load_unet(path=str(original)).spec
    torch.manual_seed(0)
    run = make_run(tmp_path / "run", "ddpm-unet", {"path": str(original)}, spec, TinyStudent())
    teacher = REGISTRY.create("teachers", "run", path=str(run))
    torch.manual_seed(1)  # a differently initialised backbone of the same architecture
    generator = BOOT.wrap_student(TinyStudent(), teacher, init_from_teacher=True)
    trained = teacher.student.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in generator.backbone.state_dict().items())
    method = BOOT(teacher, generator, num_steps=4)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    loss, logs = method.loss(generator, 2, step=0)
    loss.backward()
    assert torch.isfinite(loss) and logs["boundary_loss"] > 0
    assert all(p.grad is None for p in teacher.student.parameters())
