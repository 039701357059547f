"""DKDM at scale: host reads per step, half precision, the honest plan, the pool's bytes, and a pool
initialisation that resumes where a killed process stopped."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dkdm_zoo.config.build import Built
from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
from dkdm_zoo.engine import train
from dkdm_zoo.engine.budget import plan as budget_plan
from dkdm_zoo.methods.base import SetupContext
from dkdm_zoo.methods.dkdm import DKDM
from dkdm_zoo.methods.score_distill import SiD
from dkdm_zoo.runs import Run
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.spec_only import SpecTeacher
from tests.methods.tiny import T, tiny_student, tiny_teacher

PACKAGE = str(Path(__import__("dkdm_zoo").__file__).parent)
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "nonzero")


@contextmanager
def count_host_reads():
    """Count calls that read a tensor back to the host, made by dkdm-zoo's own code."""
    calls = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, original):
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE):
                calls.append((name, caller, sys._getframe(1).f_lineno))
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def recipe(steps: int, **train_options) -> Recipe:
    config = {"batch_size": 4, "checkpoint_every": 0, "preview_every": 0, "log_every": 2, **train_options}
    return Recipe("t", Component("tiny"), Component("tiny-unet"), train=TrainConfig(steps=steps, **config))


def make_method(kind: str, teacher):
    student = tiny_student(teacher.spec)
    if kind == "dkdm":  # small pool: slots finish and are reset within the run
        return DKDM(teacher, student, rho=0.1, pool_init="ddim", pool_init_steps=2, cond_drop_prob=0.3)
    if kind == "dkdm-weighted":  # per-timestep loss weights come from a host table
        return DKDM(teacher, student, rho=0.1, pool_init="ddim", pool_init_steps=2, cond_drop_prob=0.3,
                    target="v", weighting="min-snr")  # fmt: skip
    return SiD(teacher, student)


@pytest.mark.parametrize("kind", ["dkdm", "dkdm-weighted", "sid"])
def test_a_log_window_reads_the_device_once(kind, tmp_path):
    """Two more log windows cost exactly two more host reads: steps themselves read nothing."""
    reads = {}
    for steps in (4, 8):
        teacher = tiny_teacher(num_classes=3)
        method = make_method(kind, teacher)
        with count_host_reads() as calls:
            train(
                recipe(steps), teacher, method.student, method, Run(tmp_path / f"{kind}{steps}"), quiet=True
            )
        reads[steps] = calls
    extra = len(reads[8]) - len(reads[4])
    assert extra == 2, f"{extra} reads per two windows: {reads[8][len(reads[4]) :]}"
    if kind.startswith("dkdm"):  # finished slots were reset during these runs (with no read)
        assert (method.pool.k >= 0).all()


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one precision per process: a bf16 run after fp32 ones needs it cleared."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bfloat16_teacher_and_mixed_precision_train_on_cpu(tmp_path, fresh_accelerate_state):
    teacher = tiny_teacher(num_classes=3)
    method = make_method("dkdm", teacher)
    result = train(
        recipe(4, mixed_precision="bf16", teacher_dtype="bfloat16"),
        teacher,
        method.student,
        method,
        Run(tmp_path),
        quiet=True,
    )
    assert result.step == 4
    assert all(p.dtype == torch.bfloat16 for p in teacher.unet.parameters())
    assert all(p.dtype == torch.float32 for p in method.student.parameters())
    assert method.pool.x.dtype == torch.float32  # the pool stays float32 whatever the precision
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = method.loss(method.student, 4, 4)
    assert loss.dtype == torch.float32 and logs["mse"].dtype == torch.float32 and torch.isfinite(loss)


def test_planned_pool_bytes_equal_the_checkpointed_pool(tmp_path):
    teacher = tiny_teacher(num_classes=3)
    method = make_method("dkdm", teacher)
    cfg = recipe(2, checkpoint_every=2)
    budget = budget_plan(Built(cfg, teacher, method.student, method))
    train(cfg, teacher, method.student, method, Run(tmp_path), quiet=True)
    state = load_file(str(tmp_path / "checkpoints/checkpoint-0000002/method-rank0.safetensors"))
    pool = sum(state[k].numel() * state[k].element_size() for k in ("pool_x", "pool_k", "pool_refs"))
    assert budget.state_bytes["pool"] == pool
    assert budget.flops_per_step > 0 and budget.activation_bytes > 0


def test_the_stable_diffusion_recipe_pool_is_the_latents_alone():
    """sd-to-small-latent-unet: rho 4, batch 48, 4x64x64 latents: 192,000 slots of 64 KiB + 12 bytes."""
    spec = TeacherSpec(
        sample_shape=(4, 64, 64),
        space="latent",
        conditioning="text",
        text_embed_dim=768,
        text_seq_len=77,
        schedule={"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    )
    teacher = SpecTeacher(spec, guidance_scale=7.5)
    method = DKDM(teacher, torch.nn.Linear(1, 1), rho=4.0)
    plan = method.plan(48, 640_000)  # the recipe's steps
    assert plan.details["pool_slots"] == 192_000
    latent = 4 * 4 * 64 * 64
    assert plan.state_bytes["pool"] == 192_000 * (latent + 4 + 8)  # 12.58 GB, against 55 GB with embeddings
    assert plan.state_bytes["pool"] < 192_000 * latent * 1.001


def test_a_text_teachers_pool_stores_prompt_indices(tmp_path):
    pytest.importorskip("transformers")
    from dkdm_zoo.testing.tiny_teachers import latent_sd_teacher

    teacher = latent_sd_teacher()
    method = DKDM(teacher, tiny_student(teacher.spec), rho=0.1, pool_init="ddim", pool_init_steps=1)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    state = method.state_dict()
    slots = len(method.pool)
    per_slot = (
        sum(state[k].numel() * state[k].element_size() for k in ("pool_x", "pool_k", "pool_refs")) / slots
    )
    latent = 4 * int(np.prod(teacher.spec.sample_shape))
    assert per_slot < 2 * latent and state["pool_refs"].dtype == torch.int64
    assert set(method.pool.refs.tolist()) <= set(range(len(teacher.prompts)))
    loss, _ = method.loss(method.student, 4, 0)
    assert torch.isfinite(loss) and len(teacher._cache) <= len(teacher.prompts) + 1  # encoded per batch


class KilledDuringInit(DKDM):
    """Dies after the pool initialisation has checkpointed ``after`` times."""

    after = 3

    def setup(self, ctx: SetupContext) -> None:
        calls = []

        def save_then_die() -> None:
            ctx.save_progress()
            calls.append(1)
            if len(calls) == self.after:
                raise KeyboardInterrupt("killed")

        super().setup(dataclasses.replace(ctx, save_progress=save_then_die))


@pytest.mark.parametrize("kind", ["ancestral", "ddim", "trajectory"])
def test_a_killed_pool_initialisation_resumes_where_it_stopped(kind, tmp_path):
    options = {"rho": 0.2, "pool_init": kind, "pool_init_steps": 3}
    cfg = recipe(2, checkpoint_every=2, setup_checkpoint_minutes=0.0)

    def run(cls, out: Path, resume: bool = False) -> None:
        teacher = tiny_teacher(num_classes=3)
        method = cls(teacher, tiny_student(teacher.spec), **options)
        train(cfg, teacher, method.student, method, Run(out), resume=resume, quiet=True)

    run(DKDM, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(KilledDuringInit, tmp_path / "killed")
    partial = load_file(str(tmp_path / "killed/checkpoints/checkpoint-0000000/method-rank0.safetensors"))
    assert "init_target" in partial  # the checkpoint holds an initialisation in progress
    run(DKDM, tmp_path / "killed", resume=True)
    name = "checkpoints/checkpoint-0000002/method-rank0.safetensors"
    a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "killed" / name))
    assert a.keys() == b.keys() and "init_target" not in a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_trajectory_slots_are_chain_snapshots_at_stratified_stops():
    teacher = tiny_teacher()
    method = DKDM(teacher, tiny_student(teacher.spec), rho=1.0, pool_init="trajectory", pool_init_steps=2)
    method.setup(SetupContext(torch.device("cpu"), torch.Generator().manual_seed(0), 4))
    per_chain = round((T - 1) / 2)
    k = method.pool.k
    chains = k.reshape(-1, per_chain)  # contiguous slots share a chain
    assert all(len(set(row.tolist())) == per_chain for row in chains)  # distinct stops per chain
    assert k.min() >= 1 and k.max() <= T - 1
    lowest = chains.min(axis=1)
    assert method.teacher_forwards == int((T - 1 - lowest).sum())  # a chain runs down to its lowest stop
    assert method.teacher_forwards / len(k) < 2.5  # about pool_init_steps forwards a slot


def test_a_short_trial_sizes_its_pool_to_the_run_and_a_longer_resume_grows_it(tmp_path):
    """A 3-step trial draws 12 samples: it initialises 12 slots, not round(rho T) b = 32; resumed for
    20 steps, the pool grows to 32, the old slots keep their state and the new ones are initialised."""
    teacher = tiny_teacher(num_classes=3)
    method = DKDM(teacher, tiny_student(teacher.spec), rho=0.4)
    assert method.plan(4, 3).details["pool_slots"] == 12 and method.plan(4, 100).details["pool_slots"] == 32
    train(recipe(3, checkpoint_every=3), teacher, method.student, method, Run(tmp_path), quiet=True)
    assert len(method.pool) == 12 and method.teacher_forwards == method.init_forwards + 3 * 4
    assert 0 < method.init_forwards <= method.plan(4, 3).init_forwards  # K = 4 at most a slot
    before = method.pool.state_dict()

    teacher = tiny_teacher(num_classes=3)
    again = DKDM(teacher, tiny_student(teacher.spec), rho=0.4)
    ctx = SetupContext(
        torch.device("cpu"), torch.Generator().manual_seed(0), 4, steps=20, state=method.state_dict()
    )
    again.setup(ctx)
    assert len(again.pool) == 32
    assert torch.equal(again.pool.x[:12], before["pool_x"]) and np.array_equal(
        again.pool.k[:12], method.pool.k
    )
    assert (again.pool.k[12:] >= 1).all() and torch.isfinite(again.pool.x[12:]).all()
    assert again.init is None and again.teacher_forwards > method.teacher_forwards


def test_the_time_estimate_is_flops_over_the_accelerators_rate():
    from dkdm_zoo.engine.budget import Budget, peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("a laptop") is None
    budget = Budget(1, 1, 0, 0, {}, None, flops_per_step=2e12, teacher_forward_flops=1e10, init_forwards=500,
                    train_forwards=0, passes={})  # fmt: skip
    init, train = budget.seconds(steps=1000, peak=1e15, utilisation=0.5)
    assert init == pytest.approx(500 * 1e10 / 5e14) and train == pytest.approx(1000 * 2e12 / 5e14)
