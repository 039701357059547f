"""The Method contract: what a distillation algorithm declares and what the engine does with it.

A method owns the algorithm and its state (the DKDM pool, BOOT's step choices, SiD's fake score);
it knows nothing about precision or processes, and about devices only the one it is handed. The
engine, in order:

    method = factory(teacher, student, **options)   # may adapt the student (BOOT wraps it)
    method.plan(batch_size, steps, grad_accum)      # --dry-run: a typed Plan
    method.networks()                               # every trainable network, "student" first
    method.setup(SetupContext(...))                 # once per process: restores state when resuming
    for each step, for each Update in method.updates(), repeats x grad_accum micro-steps:
        loss, logs = method.update_loss(update.network, nets, batch_size, step)
    method.state_dict() / load_state_dict()         # checkpointed with the run (per process)
    method.sample(student, n, ...)                  # previews and evaluation

Every network in ``networks()`` gets the same treatment from the engine: device, mixed precision,
DDP wrapping, torch.compile, an AdamW optimiser with its own learning rate and betas, gradient
clipping, an lr schedule, and checkpoint/resume; the student also gets the EMA that is exported.
During an update only the updated network has ``requires_grad``; ``nets[update]`` is its prepared
(DDP / compiled) module and every other entry is the plain module.

Logged scalars may be tensors: the engine accumulates them on the device and reads them only every
``train.log_every`` steps, so a method must not call ``.item()``/``float()`` on device tensors in
``loss`` (a test counts such host reads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import IncompatibleError
from dkdm_zoo.registry.options import OptionSet
from dkdm_zoo.sampling.chain import sample_student
from dkdm_zoo.students.base import split_output, takes_condition_extras
from dkdm_zoo.students.one_step import draw_step_noise, is_one_step
from dkdm_zoo.teachers.base import Condition, Teacher, TeacherOutput

STUDENT = "student"
Logs = dict[str, Tensor | float]


def student_eps(
    student: nn.Module, x: Tensor, t: Tensor, cond: Condition | None, channels: int
) -> tuple[Tensor, Tensor | None]:
    """Split a student output into eps and the learned-variance values (None for fixed variance)."""
    kwargs = cond.model_kwargs(extras=takes_condition_extras(student)) if cond is not None else {}
    return split_output(student(x, t, **kwargs), channels)


def drop_refs(
    teacher: Teacher, refs: np.ndarray | None, prob: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Each reference replaced by the null condition with probability ``prob`` (to learn guidance)."""
    if refs is None or prob <= 0:
        return refs
    return np.where(rng.random(len(refs)) < prob, teacher.null_ref(), refs)


@dataclass(frozen=True)
class SetupContext:
    """What the engine hands a method before training, once per process."""

    device: torch.device
    generator: torch.Generator  # this process's method generator (seeded with seed + rank), on ``device``
    batch_size: int  # per process and micro-step
    steps: int | None = None  # the optimiser steps the run plans (a method may size its set-up to them)
    grad_accum: int = 1
    rank: int = 0
    world_size: int = 1
    show_progress: bool = False  # draw progress bars (main process, not --quiet)
    # This process's method state from the checkpoint being resumed (None: a fresh start).
    state: Mapping[str, Any] | None = None
    # Checkpoint the method's state now (long set-up work such as pool initialisation calls it
    # between chunks, so that a killed process resumes where it stopped). Collective: every
    # process calls it at the same points.
    save_progress: Callable[[], None] = field(default=lambda: None)

    @property
    def resuming(self) -> bool:
        return self.state is not None


@dataclass(frozen=True)
class Network:
    """A trainable network and its optimiser settings (None: the recipe's ``train.*`` value)."""

    module: nn.Module
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class Update:
    """One optimiser update of ``network`` per training step, repeated ``repeats`` times."""

    network: str
    repeats: int = 1


@dataclass(frozen=True)
class Passes:
    """Network passes per training sample and step: forwards, and backwards (through parameters
    or, for frozen networks, only to their input)."""

    forward: float = 0.0
    backward: float = 0.0


@dataclass(frozen=True)
class Plan:
    """What a run will cost, per process: the dry-run prints it, tests check it against counters.

    Teacher forwards count samples through the teacher network (classifier-free guidance counts
    twice). ``state_bytes`` names method state held in memory (the DKDM pool, a generated set).
    ``passes`` gives each network's forwards/backwards per training sample and step (the teacher's
    guidance included), from which the dry run derives FLOPs per step.
    """

    init_forwards: int = 0
    train_forwards: int = 0
    state_bytes: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, int | float | str] = field(default_factory=dict)
    passes: Mapping[str, Passes] = field(default_factory=dict)


def refuse_flow_teacher(method: Any, teacher: Teacher, name: str | None = None) -> None:
    """A one-line refusal of a flow-matching teacher by a method that reads only discrete VP chains."""
    if teacher.spec.process == "flow" and not getattr(method, "supports_flow", False):
        family = teacher.spec.family or type(teacher).__name__
        called = f"'{name}'" if name else getattr(method, "__name__", str(method))
        raise IncompatibleError(
            f"method {called} does not train from flow-matching teachers yet (teacher '{family}' "
            "predicts a velocity on a rectified-flow path): sample or evaluate it, or distil a DDPM teacher"
        )


@dataclass(frozen=True)
class MethodOptions(OptionSet):
    """The options of a built-in method (``Method.Options``): one frozen dataclass, checked on
    construction; a method's factory is called with them as keyword arguments."""

    SECTION: ClassVar[str] = "method"


class Method(ABC):
    """A distillation algorithm: teacher + student -> losses, one per declared update."""

    @property
    def one_step(self) -> bool:
        """Whether the exported student is a one-step generator (from its type, as everywhere)."""
        return is_one_step(self.student)

    #: whether the method trains from flow-matching teachers (``spec.process == "flow"``)
    supports_flow: ClassVar[bool] = False

    def __init__(self, teacher: Teacher, student: nn.Module):
        refuse_flow_teacher(type(self), teacher)
        self.teacher = teacher
        self.student = student  # the network the run exports (a method may wrap what it was given)
        self.teacher_forwards = 0  # samples through the teacher network so far (CFG counts twice)
        self.teacher_calls = 0  # batched teacher network calls so far
        self.device = torch.device("cpu")
        self.generator: torch.Generator | None = None
        # Host-side draws (slot choices, condition references, dropout of conditions): numpy, so
        # the training step never waits for the device to learn what to do next.
        self.host_rng = np.random.default_rng(0)
        self.batch_size = 1
        self.show_progress = False

    # -- what a method declares ----------------------------------------------------------------
    def networks(self) -> dict[str, Network]:
        """Every trainable network by name; ``"student"`` is the exported one (and has the EMA)."""
        return {STUDENT: Network(self.student)}

    def updates(self) -> tuple[Update, ...]:
        """The updates of one training step, in order (e.g. k fake-score updates, then the student)."""
        return (Update(STUDENT),)

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        """The budget of a run (default: one student forward/backward per sample, no teacher)."""
        return Plan(passes={STUDENT: Passes(1, 1)})

    def counters(self) -> dict[str, int]:
        """Running counts the engine sums over processes and logs (teacher forwards and calls)."""
        return {"teacher_forwards": self.teacher_forwards, "teacher_calls": self.teacher_calls}

    # -- lifecycle ----------------------------------------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        """Prepare state on ``ctx.device``; when resuming, restore ``ctx.state`` instead of rebuilding
        it (subclasses call this first, then finish any work a killed set-up left undone)."""
        self.device = ctx.device
        self.generator = ctx.generator
        self.batch_size = ctx.batch_size
        self.show_progress = ctx.show_progress
        if ctx.state is not None:
            self.load_state_dict(dict(ctx.state))
        else:
            gen = ctx.generator
            self.host_rng = np.random.default_rng(
                int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
            )

    @abstractmethod
    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        """The student's loss for one micro-batch (fp32 scalar) and scalars to log."""

    def update_loss(
        self, update: str, nets: Mapping[str, nn.Module], batch_size: int, step: int
    ) -> tuple[Tensor, Logs]:
        """The loss of one declared update; single-network methods need not override it."""
        if update != STUDENT:
            raise NotImplementedError(f"{type(self).__name__} declares no update {update!r}")
        return self.loss(nets[STUDENT], batch_size, step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher_forwards": self.teacher_forwards,
            "teacher_calls": self.teacher_calls,
            "host_rng": self.host_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_forwards = int(state.get("teacher_forwards", 0))
        self.teacher_calls = int(state.get("teacher_calls", 0))
        if "host_rng" in state:
            self.host_rng.bit_generator.state = state["host_rng"]

    # -- shared helpers -----------------------------------------------------------------------------
    def guided(self, guidance_scale: float | None = None) -> bool:
        """Classifier-free guidance applies: a conditional teacher and a scale other than 1."""
        scale = self.teacher.guidance_scale if guidance_scale is None else guidance_scale
        return self.teacher.spec.conditioning != "none" and scale is not None and scale != 1.0

    def draw_conditions(self, n: int, drop_prob: float = 0.0) -> Condition | None:
        """Random conditions for a training batch, drawn on the host (``drop_prob``: the null one)."""
        refs = self.teacher.draw_refs(n, self.host_rng)
        return self.teacher.conditions_from_refs(drop_refs(self.teacher, refs, drop_prob, self.host_rng))

    def teacher_cost(self, guidance_scale: float | None = None) -> int:
        """Teacher network evaluations per sample (2 with classifier-free guidance)."""
        return 2 if self.guided(guidance_scale) else 1

    def predict_teacher(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Condition | None,
        guidance_scale: float | None = None,
        *,
        grad: bool = False,
    ) -> TeacherOutput:
        """The teacher's prediction, counted; ``grad=True`` keeps the graph to ``x_t`` (frozen weights)."""
        scale = self.teacher.guidance_scale if guidance_scale is None else guidance_scale
        self.teacher_forwards += len(x_t) * (2 if cond is not None and self.guided(scale) else 1)
        self.teacher_calls += 1
        x_t, t = x_t.to(self.teacher.device), t.to(self.teacher.device)
        if grad:
            return self.teacher.denoise(x_t, t, cond, scale)
        return self.teacher.predict(x_t, t, cond, scale)

    @torch.no_grad()
    def sample(
        self,
        student: nn.Module,
        n: int,
        *,
        steps: int = 50,
        sampler: str = "ddim",
        cond: Condition | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Images from the student (previews, evaluation): a one-step generator in one call, any other
        student as an eps-model on the teacher's schedule; decoded to [-1, 1] unless ``decode=False``;
        ``progress(1)`` after every network call."""
        spec = self.teacher.spec
        device = next(student.parameters()).device
        if cond is None and spec.conditioning != "none":
            cond = self.teacher.sample_conditions(n, generator)
        kwargs = (
            cond.to(device).model_kwargs(extras=takes_condition_extras(student)) if cond is not None else {}
        )
        noise = torch.randn((n, *spec.sample_shape), generator=generator).to(device)
        # a K-step generator's fresh noise: from the same stream, after the initial noise
        step_noise = draw_step_noise(student, tuple(noise.shape), generator)
        samples = sample_student(
            student,
            spec,
            self.teacher.schedule,
            noise,
            kwargs,
            steps=steps,
            sampler=sampler,
            progress=progress,
            step_noise=step_noise,
        )
        return self.teacher.decode(samples) if decode else samples
