"""What a run will cost, per process, before it runs: the numbers `distill --dry-run` prints.

- memory: teacher weights; student weights, gradients, AdamW state and EMA; every other trainable
  network the method declares; method state (the DKDM pool, samples plus their timestep index
  and condition reference); activations, the bytes autograd saves in a forward of each
  differentiated network at batch 1 and at batch 2: their difference is what one more sample
  costs, the rest (weights saved for the backward) is counted once, and only where it is a copy
  (mixed precision's casts); with ``train.activation_checkpointing`` measured checkpointed;
- compute: FLOPs of each network's forward and backward at batch 1 (``FlopCounterMode``), times
  the passes per sample the method's ``Plan`` declares, times the batch: FLOPs per training step;
- teacher forwards for initialisation and training, and from them and the FLOPs an estimated
  wall time on a named accelerator at a stated utilisation.

The measurements run on fake tensors (shapes only, nothing computed), so a 860M-parameter UNet
costs seconds on a CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM
    "H100-PCIE": 756e12,
    "H100-NVL": 835e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}
DEFAULT_UTILISATION = 0.4  # diffusion training commonly reaches 30-50% of the bf16 peak


def peak_flops(name: str) -> float | None:
    """A device name (or a name like "NVIDIA H100 80GB HBM3") -> its peak, most specific first."""
    upper = name.upper().replace(" ", "-")
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key in upper:
            return PEAK_BF16[key]
    return None


def cpu_flops(size: int = 512, repeats: int = 8) -> float:
    """This CPU's fp32 matmul FLOP/s, measured (about 0.1 s): the peak a --dry-run's CPU estimate
    takes, as a GPU's datasheet bf16 peak is for a GPU."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / max(time.perf_counter() - start, 1e-9)


@dataclass(frozen=True)
class NetworkCost:
    """One network: FLOPs of a forward and a backward at batch 1; bytes saved for the backward per
    sample, and once per forward whatever the batch (mixed precision's weight casts)."""

    forward_flops: float
    backward_flops: float
    activation_bytes: float
    activation_fixed_bytes: float = 0.0

    def activations(self, batch: int) -> float:
        return batch * self.activation_bytes + self.activation_fixed_bytes


@dataclass
class Budget:
    teacher_params: int
    student_params: int
    other_params: int
    weight_bytes: int  # teacher weights + trainable weights, gradients, AdamW state, EMA
    state_bytes: dict[str, int]
    activation_bytes: float | None  # at the planned batch
    flops_per_step: float | None  # all processes' work is world_size times this
    teacher_forward_flops: float | None  # one teacher evaluation of one sample
    init_forwards: int
    train_forwards: int
    passes: dict[str, tuple[float, float]]
    details: dict[str, Any] = field(default_factory=dict)
    #: per differentiated network ("teacher", "student", ...): activations saved at the planned batch
    network_activations: dict[str, float] = field(default_factory=dict)
    #: the teacher as loaded plus the cast copy of its largest network (``engine.phases``)
    teacher_start_up_bytes: float = 0.0

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + sum(self.state_bytes.values()) + (self.activation_bytes or 0)

    def seconds(self, steps: int, peak: float, utilisation: float) -> tuple[float | None, float | None]:
        """(pool/dataset initialisation, training) seconds at ``utilisation`` of ``peak`` FLOP/s."""
        rate = peak * utilisation
        init = (
            None
            if self.teacher_forward_flops is None
            else self.init_forwards * self.teacher_forward_flops / rate
        )
        train = None if self.flops_per_step is None else steps * self.flops_per_step / rate
        return init, train


def count_parameters(modules: Any) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def count_trainable(modules: Any) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def teacher_components(teacher: Any) -> dict[str, int]:
    """Parameters of each network a teacher holds, by the attribute that holds it (unet, vae, ...)."""
    names = {id(m): name for name, m in vars(teacher).items() if isinstance(m, nn.Module)}
    counts: dict[str, int] = {}
    for m in teacher.modules():
        name = base = names.get(id(m), type(m).__name__)
        index = 2
        while name in counts:  # two networks of one class held outside attributes (SD3's two CLIPs)
            name, index = f"{base}#{index}", index + 1
        counts[name] = count_parameters([m])
    return counts


@contextlib.contextmanager
def _measuring(module_params: list[nn.Parameter]):
    """Fake tensors (shapes only) and a FLOP counter; real parameters' grads are left as they were."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    grads = [p.grad for p in module_params]
    # networks built with their weights unread hold fake tensors already: measure in their mode
    fake = next((p for p in module_params if isinstance(p, FakeTensor)), None)
    mode = fake.fake_mode if fake is not None else FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with mode, FlopCounterMode(display=False) as counter:
            yield counter
    finally:
        for p, g in zip(module_params, grads, strict=True):
            p.grad = g


def _measure(
    run_forward: Any, params: list[nn.Parameter], backward: bool, autocast: str = "no"
) -> NetworkCost:
    """FLOPs of ``run_forward(1)`` (and of its backward) and the bytes autograd saves for it at batch
    1 and 2, under the run's mixed precision (``autocast``: "no", "bf16" or "fp16")."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    device = params[0].device.type if params else "cpu"
    saved_at: list[float] = []
    flops: tuple[float, float] = (0.0, 0.0)
    for batch in (1, 2) if backward else (1,):
        saved: dict[int, int] = {}

        def pack(t: Tensor, saved: dict[int, int] = saved) -> Tensor:
            saved[id(t)] = t.numel() * t.element_size()
            return t

        with _measuring(params) as counter:
            hooks = (
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
                if backward
                else contextlib.nullcontext()
            )
            amp = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with hooks, torch.set_grad_enabled(backward), amp:
                out = run_forward(batch)
            forward = counter.get_total_flops()
            if backward and batch == 1:
                out.float().sum().backward()
            if batch == 1:
                flops = (float(forward), float(counter.get_total_flops() - forward))
        saved_at.append(float(sum(saved.values())))
    if not backward:
        return NetworkCost(*flops, 0.0)
    per_sample = max(saved_at[1] - saved_at[0], 0.0)
    # what does not grow with the batch is mostly the weights saved for the backward: the parameters
    # themselves in fp32 (already counted as weights), copies under autocast's casts
    fixed = max(saved_at[0] - per_sample, 0.0) if dtype is not None else 0.0
    return NetworkCost(*flops, per_sample, fixed)


def measure_teacher(
    teacher: Any, backward: bool = False, module: nn.Module | None = None, autocast: str = "no"
) -> NetworkCost:
    """One unguided evaluation of the teacher's network (or of ``module`` in its place) on one sample."""
    spec = teacher.spec
    conds = {n: teacher.null_condition(n) for n in (1, 2)}  # real: a text teacher encodes "" once
    view = teacher if module is None else teacher.with_denoiser(module)
    params = [p for m in view.modules() for p in m.parameters()]

    def forward(batch: int) -> Tensor:
        x = torch.randn(batch, *spec.sample_shape, device=teacher.device, requires_grad=backward)
        t = torch.full((batch,), spec.num_train_timesteps // 2, device=teacher.device)
        return view.denoise(x, t, conds[batch], guidance_scale=1.0).x0

    return _measure(forward, params, backward, autocast)


def measure_student(student: nn.Module, spec: Any, autocast: str = "no", teacher: Any = None) -> NetworkCost:
    """One student forward and backward; a student that takes the teacher family's condition extras
    (the teacher's own network: SDXL's time ids, SD3's pooled projections) gets ``teacher``'s."""
    from dkdm_zoo.students.base import example_inputs, takes_condition_extras

    device = next(student.parameters()).device
    conds = (
        {n: teacher.null_condition(n) for n in (1, 2)}  # real: a text teacher encodes "" once
        if teacher is not None and takes_condition_extras(student)
        else None
    )

    def forward(batch: int) -> Tensor:  # inputs are created inside the fake mode
        inputs = example_inputs(spec, batch, device)
        if conds is not None and conds[batch] is not None:  # an unconditional teacher has none
            inputs = {**inputs, **conds[batch].model_kwargs(extras=True)}
        return student(**inputs)

    return _measure(forward, list(student.parameters()), True, autocast)


def plan(built: Any, world_size: int = 1, *, measure: bool = True) -> Budget:
    """The budget of ``built`` (teacher, student, method, recipe), per process; measuring casts the
    teacher to ``train.teacher_dtype``, as training will."""
    from dkdm_zoo.engine.memory import DTYPE_BYTES
    from dkdm_zoo.engine.phases import teacher_start_up

    cfg = built.recipe.train
    method_plan = built.method.plan(cfg.batch_size, cfg.steps, cfg.grad_accum)
    networks = built.method.networks()
    teacher_params = count_parameters(built.teacher.modules())
    student_params = count_parameters([built.student])
    others = {name: n.module for name, n in networks.items() if name != "student"}
    other_params = count_parameters(others.values())
    teacher_bytes = DTYPE_BYTES[cfg.teacher_dtype]
    ema = 4 if cfg.ema_decay > 0 else 0
    # frozen tensors a trained network shares with the teacher (LoRA: the whole base) cost nothing more;
    # only what trains carries gradients, AdamW moments and the EMA
    teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
    frozen = sum(
        p.numel() for m in [built.student, *others.values()] for p in m.parameters() if not p.requires_grad
    )
    shared = sum(
        p.numel()
        for m in [built.student, *others.values()]
        for p in m.parameters()
        if not p.requires_grad and id(p) in teacher_ids
    )
    student_trained = count_trainable([built.student])
    other_trained = count_trainable(others.values())
    weight_bytes = (
        teacher_params * teacher_bytes
        + student_trained * (4 + 4 + 8 + ema)
        + other_trained * (4 + 4 + 8)
        + (frozen - shared) * 4
    )
    extra: dict[str, Any] = {}
    if frozen:
        extra = {
            "trainable_parameters": student_trained + other_trained,
            "frozen_parameters": frozen,
            "frozen_shared_with_teacher": shared,
            # what full fine-tuning would add: gradients and AdamW moments of the frozen tensors, the
            # student's EMA of them, and a copy of those now shared with the teacher
            "memory_saved_bytes": frozen * (4 + 8)
            + sum(p.numel() for p in built.student.parameters() if not p.requires_grad) * ema
            + shared * 4,
        }
    passes = {name: (p.forward, p.backward) for name, p in method_plan.passes.items()}
    state_bytes = dict(method_plan.state_bytes)
    cache = getattr(built.teacher, "condition_cache_bytes", None)  # text families' encoded prompts
    if cache is not None:
        state_bytes["teacher condition cache"] = int(cache())
    details = dict(method_plan.details)
    if len(built.teacher.modules()) > 1:  # each encoder, the VAE and the denoiser counted apart
        details["teacher networks"] = " + ".join(
            f"{name} {count:,}" for name, count in teacher_components(built.teacher).items()
        )
    budget = Budget(
        teacher_params=teacher_params,
        student_params=student_params,
        other_params=other_params,
        weight_bytes=weight_bytes,
        state_bytes=state_bytes,
        activation_bytes=None,
        flops_per_step=None,
        teacher_forward_flops=None,
        init_forwards=method_plan.init_forwards,
        train_forwards=method_plan.train_forwards,
        passes=passes,
        details={**details, "world_size": world_size, **extra},
        teacher_start_up_bytes=teacher_start_up(built.teacher, cfg.teacher_dtype),  # before the cast
    )
    if measure and built.teacher.modules():
        # as training does first (engine.trainer): the activations a bf16 teacher (and LoRA networks on
        # its tensors) save are bf16, whatever dtype the teacher was loaded in
        dtype = getattr(torch, cfg.teacher_dtype)
        if any(
            p.is_floating_point() and p.dtype != dtype
            for m in built.teacher.modules()
            for p in m.parameters()
        ):
            built.teacher.to(built.teacher.device, dtype)
        _unread_as_fake(built, others)
        _add_measurements(budget, built, passes, others)
    return budget


def _unread_as_fake(built: Any, others: dict[str, nn.Module]) -> None:
    """A plan built with its weights unread (``teachers.unread``): the empty copies of the teacher's
    network (meta tensors) become fakes on the teacher's device too, so all measure on one device."""
    from dkdm_zoo.teachers.unread import as_fake, is_unread

    networks = [*built.teacher.modules(), built.student, *others.values()]
    if any(is_unread(m) for m in networks):
        as_fake(networks, built.teacher.device)  # one mode for all; tensors shared stay shared


@contextlib.contextmanager
def _block_checkpointing(modules: list[nn.Module], enabled: bool):
    """diffusers' per-block checkpointing on every model in ``modules`` that has it, as training would
    run them (``train.activation_checkpointing``), restored afterwards."""
    models = [
        m
        for root in modules
        for m in root.modules()
        if enabled
        and getattr(m, "_supports_gradient_checkpointing", False)
        and hasattr(m, "enable_gradient_checkpointing")
    ]
    before = [m.is_gradient_checkpointing for m in models]
    for m in models:
        m.enable_gradient_checkpointing()
    try:
        yield
    finally:
        for m, was in zip(models, before, strict=True):
            if not was:
                m.disable_gradient_checkpointing()


def _add_measurements(budget: Budget, built: Any, passes: dict, others: dict[str, nn.Module]) -> None:
    cfg = built.recipe.train
    teacher_backward = passes.get("teacher", (0, 0))[1] > 0
    amp = cfg.mixed_precision
    networks = [*built.teacher.modules(), built.student, *others.values()]
    with _block_checkpointing(networks, cfg.activation_checkpointing):
        costs = {"teacher": measure_teacher(built.teacher, backward=teacher_backward, autocast=amp)}
        costs["student"] = measure_student(
            built.student, built.teacher.spec, autocast=amp, teacher=built.teacher
        )
        for name, module in others.items():  # trainable copies of the teacher's network (SiD's fake score)
            costs[name] = measure_teacher(built.teacher, backward=True, module=module, autocast=amp)
    budget.teacher_forward_flops = costs["teacher"].forward_flops
    flops = 0.0
    for name, (forward, backward) in passes.items():
        cost = costs[name]
        # a backward pass costs what the measured backward cost (x2 of a forward: input and weights)
        flops += forward * cost.forward_flops + backward * cost.backward_flops
    budget.flops_per_step = flops * cfg.batch_size * cfg.grad_accum
    differentiated = [n for n, (_, backward) in passes.items() if backward > 0]
    # upper bound: activations of every differentiated network held at once, for one micro-batch
    budget.network_activations = {n: costs[n].activations(cfg.batch_size) for n in differentiated}
    budget.activation_bytes = sum(budget.network_activations.values())
