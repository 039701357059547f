"""The training loop every method shares, on accelerate. It knows no algorithm: a method declares
its trainable networks and updates (``dkdm_zoo.methods.base``) and hands it one loss per micro-step.
It owns devices, precision, processes, optimisers, lr schedules, EMA, checkpoints (atomic), metrics,
previews and the final student, writing the run folder through the ``dkdm_zoo.runs.Run`` it is
handed; the command that finishes the run exports it (``dkdm_zoo.export``).

Each process seeds its method generator with ``seed + rank``; the batch size is per process. A step
reads nothing back from the device: scalars are summed there and read every ``train.log_every``
steps (``engine.meter``), which is also where a non-finite loss is caught, always before anything
is checkpointed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dkdm_zoo.config.recipes import Recipe
from dkdm_zoo.engine import checkpoint as ckpt
from dkdm_zoo.engine import restore
from dkdm_zoo.engine import sharding as shards
from dkdm_zoo.engine.interrupt import DeferredInterrupt
from dkdm_zoo.engine.meter import MetricWindow
from dkdm_zoo.engine.parameters import trained_parameters
from dkdm_zoo.engine.preview import preview
from dkdm_zoo.engine.progress import TrainingProgress
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import STUDENT, Method, SetupContext
from dkdm_zoo.runs import Manifest, Run
from dkdm_zoo.runs.student import save_student
from dkdm_zoo.students.materialise import held_parameters

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


class NonFiniteLossError(UserError):
    """The loss became NaN/inf: the run stops, keeping the last good checkpoint."""


@dataclass
class TrainResult:
    out: Path
    step: int
    world_size: int
    teacher_forwards: int
    exported: list[str]
    #: the exported network, whole, on the main process (gathered from its shards under FSDP)
    student: nn.Module | None = None
    sharding: str = "ddp"


@dataclass
class Trained:
    """One declared network in training: the plain module, its prepared (DDP/compiled) form, optimiser."""

    name: str
    module: nn.Module
    prepared: nn.Module
    optimizer: Any
    lr_schedule: Any
    trainable: list[nn.Parameter]


def train(
    recipe: Recipe,
    teacher: Any,
    student: nn.Module,
    method: Method,
    run: Run,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_at: int | None = None,
    announce: Callable[[str], None] | None = None,
    allowed_changes: list[str] | None = None,
) -> TrainResult:
    """Run (or continue, with ``resume``) ``recipe.train.steps`` optimiser steps into ``run``'s folder.

    ``student`` is ``method.student`` (the exported network). ``stop_at`` ends the run early after
    that step (checkpointing it), as an interruption would. ``announce`` gets one-line notes for the
    user (default: stderr), e.g. that resuming skipped an unreadable checkpoint. ``allowed_changes``
    (``--allow-changes``) go to run.json.
    """
    from accelerate.utils import gather_object
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    entered = time.time()  # the card's wall time counts set-up (pool initialisation) too
    cfg = recipe.train
    cpu = not torch.cuda.is_available()
    if cpu and cfg.mixed_precision == "fp16":
        raise UserError("train.mixed_precision='fp16' needs a GPU; use 'bf16' or 'no' on CPU")
    declared = method.networks()
    if STUDENT not in declared or declared[STUDENT].module is not student:
        raise ValueError("method.networks() must declare the trained student as 'student'")
    sharding = shards.choose_sharding(cfg, explicit="sharding" in recipe.train_set)
    acc = shards.make_accelerator(cfg, str(run.path), sharding, cpu)
    sharded = shards.is_sharded(acc)  # FSDP2 over several processes (one process has nothing to shard)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    checkpoints = run.checkpoints_dir
    device = acc.device
    torch.manual_seed(cfg.seed + rank)
    if sharded:
        shards.refuse_shared_weights(teacher, declared)  # LoRA students: before anything is written

    teacher.to(device, DTYPES[cfg.teacher_dtype])
    for network in declared.values():
        shards.place(network.module, device, cfg.channels_last)
    # what each process built whole (an empty copy holds none: it receives its shards from process 0)
    held = {name: held_parameters(network.module) for name, network in declared.items()}
    teacher_net = shards.teacher_network(teacher, declared)
    if cfg.activation_checkpointing:
        for name, network in declared.items():
            shards.enable_block_checkpointing(network.module, name)
        # SiD back-propagates through the frozen teacher: its blocks too, also when LoRA networks share
        # its tensors (the denoiser the teacher calls is its own module, not the adapters' copies)
        denoiser = shards.teacher_denoiser(teacher)
        if denoiser is not None:
            shards.enable_block_checkpointing(denoiser, "teacher", required=False)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + rank)

    if main:
        ckpt.clean_temp(checkpoints)
        run.start(recipe, Manifest.of(recipe, teacher.spec, student, method.one_step, allowed_changes))
    acc.wait_for_everyone()

    trained: dict[str, Trained] = {}
    for name, network in declared.items():
        optimizer = torch.optim.AdamW(
            network.module.parameters(),
            lr=cfg.lr if network.lr is None else network.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2) if network.betas is None else network.betas,
            weight_decay=cfg.weight_decay if network.weight_decay is None else network.weight_decay,
        )
        schedule = get_scheduler(
            SCHEDULES[cfg.lr_schedule],
            optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=cfg.steps,
        )
        trainable = [p for p in network.module.parameters() if p.requires_grad]
        trained[name] = Trained(name, network.module, network.module, optimizer, schedule, trainable)
    skeleton = None
    if sharded:  # shard every network with its optimiser now: the EMA and a resume see the shards
        skeleton = shards.meta_skeleton(student) if main else None  # what the final weights gather into
        for net in trained.values():
            net.module, net.optimizer = shards.prepare_sharded(acc, net.module, net.optimizer)
            net.prepared = torch.compile(net.module) if cfg.compile else net.module
            net.trainable = [p for p in net.module.parameters() if p.requires_grad]
    # EMA of what trains (a LoRA student's adapters, not the teacher's frozen base it shares); DTensor
    # shards have no foreach copy: a sharded EMA updates parameter by parameter
    ema = (
        EMAModel(trained_parameters(student), decay=cfg.ema_decay, foreach=not sharded)
        if cfg.ema_decay > 0
        else None
    )
    if ema is not None:
        ema.to(device)

    step, method_state = 0, None
    if resume:  # the newest readable checkpoint (an unreadable latest one falls back, said in one line)
        say = announce if announce is not None else _stderr_line
        step, method_state = restore.resume_from(
            checkpoints, acc, trained, ema, generator, device, say if main else lambda line: None
        )

    setup_clock = {"last": time.monotonic()}
    recipe_text = recipe.dumps()  # each checkpoint records what it was trained with
    stop = DeferredInterrupt(enabled=main and not quiet)

    def save_progress() -> None:
        """Checkpoint mid-setup (step 0) when the main process's clock says it is time, or a Ctrl-C
        asked to stop (then stop after saving): collective, called between consistent states."""
        flags = torch.tensor(
            [
                float(time.monotonic() - setup_clock["last"] >= 60 * cfg.setup_checkpoint_minutes),
                stop.requested,
            ]
        )
        if world > 1:
            flags = acc.reduce(flags.to(device), "sum").cpu()  # rank 0's decision would need a broadcast
        if float(flags.sum()) > 0:
            ckpt.save_training_state(
                acc, checkpoints, 0, trained, ema, method, generator, cfg.checkpoints_keep, recipe_text
            )
            setup_clock["last"] = time.monotonic()
        if float(flags[1]) > 0:
            raise KeyboardInterrupt("interrupted during set-up; its progress is saved at step 0")

    context = SetupContext(
        device=device,
        generator=generator,
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        grad_accum=cfg.grad_accum,
        rank=rank,
        world_size=world,
        show_progress=main and not quiet,
        state=method_state,
        save_progress=save_progress,
    )
    with stop:
        if method_state is None:
            method.setup(context)
        else:
            try:
                method.setup(context)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
                raise UserError(
                    f"--resume: the method state in {ckpt.find_latest(checkpoints)} does not fit "
                    f"{recipe.method.name} ({type(exc).__name__}: {exc}); restore the checkpoint or start "
                    "a new run (--overwrite)"
                ) from None
    restore.check_method_state(method.state_dict(), type(method).__name__)

    if sharded:
        if teacher_net is not None:  # after set-up: a pool initialisation ran the whole teacher per process
            shards.prepare_sharded(acc, teacher_net, None)
    else:
        names = list(trained)
        prepared = acc.prepare(
            *[torch.compile(trained[n].module) if cfg.compile else trained[n].module for n in names],
            *[trained[n].optimizer for n in names],
        )
        for i, name in enumerate(names):
            trained[name].prepared, trained[name].optimizer = prepared[i], prepared[len(names) + i]
    if cfg.tracker != "none":
        acc.init_trackers(
            "dkdm-zoo",
            config={k: v for k, v in asdict(cfg).items() if isinstance(v, int | float | str | bool)},
        )

    processes = gather_object([{"rank": rank, "pid": os.getpid(), "held_parameters": held}])
    if main:
        run.append_metrics(
            {
                "event": "start",
                "step": step,
                "world_size": world,
                "processes": processes,
                "device": str(device),
                "sharding": shards.FSDP if sharded else shards.DDP,
                "setup_s": time.time() - entered,
            },
        )

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    window = MetricWindow(device)
    window_start, window_samples = time.perf_counter(), 0
    progress = TrainingProgress(enabled=main and not quiet, total=cfg.steps, start=step)
    updates = method.updates()
    several = len(trained) > 1
    # FSDP2 fixes each unsharded parameter's requires_grad when it first gathers it: sharded networks
    # keep theirs, and an update starts from zeroed gradients (another update's backward may have
    # reached its weights)
    toggle = several and not sharded
    try:
        while step < end:
            for update in updates:
                net = trained[update.network]
                if toggle:  # only the updated network computes weight gradients
                    _trainable_only(trained, update.network)
                nets = {n: (t.prepared if n == update.network else t.module) for n, t in trained.items()}
                net.prepared.train()
                if sharded and several:
                    net.optimizer.zero_grad(set_to_none=True)
                for _ in range(update.repeats * cfg.grad_accum):
                    with acc.accumulate(net.prepared):
                        with acc.autocast():
                            loss, logs = method.update_loss(update.network, nets, cfg.batch_size, step)
                        window.add_loss(
                            "loss" if update.network == STUDENT else f"{update.network}_loss", loss, step + 1
                        )
                        for key, value in logs.items():
                            window.add(key, value)
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.grad_clip > 0:
                            shards.clip_gradients(acc, net.prepared, cfg.grad_clip)
                        net.optimizer.step()
                        net.optimizer.zero_grad(set_to_none=True)
            if toggle:
                _trainable_only(trained, None)
            window_samples += cfg.batch_size * cfg.grad_accum * world
            for net in trained.values():
                net.lr_schedule.step()
            if ema is not None:
                ema.step(trained_parameters(student))
            step += 1
            progress.update(step, window_samples / max(time.perf_counter() - window_start, 1e-9))

            at_end = step == end
            log_now = step % cfg.log_every == 0 or at_end
            preview_now = bool(cfg.preview_every) and (step % cfg.preview_every == 0 or at_end)
            checkpoint_now = bool(cfg.checkpoint_every) and (step % cfg.checkpoint_every == 0 or at_end)
            if log_now or preview_now or checkpoint_now:
                reading = window.read(acc, method.counters())  # the window's one host read
                if reading.first_nonfinite_step is not None:
                    last = ckpt.find_latest(checkpoints)
                    then = "the same command with --resume" if last is not None else "the command again"
                    raise NonFiniteLossError(
                        f"non-finite loss at step {reading.first_nonfinite_step}; the run stopped, last good "
                        f"checkpoint: {last if last is not None else 'none'} (lower train.lr, raise "
                        f"train.grad_clip or use train.mixed_precision='no', then run {then})"
                    )
                record = {
                    "step": step,
                    "lr": float(trained[STUDENT].lr_schedule.get_last_lr()[0]),
                    **{
                        f"lr_{n}": float(t.lr_schedule.get_last_lr()[0])
                        for n, t in trained.items()
                        if n != STUDENT
                    },
                    "samples_per_s": window_samples / max(time.perf_counter() - window_start, 1e-9),
                    **reading.counters,  # teacher forwards (samples) and calls, all processes
                    **reading.means,
                }
                progress.show_loss(reading.means.get("loss", math.nan))
                if main:
                    run.append_metrics(record)
                    if cfg.tracker != "none":
                        acc.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=step)
                window_start, window_samples = time.perf_counter(), 0
            if preview_now:
                preview(acc, run, step, student, ema, method, cfg, progress, sharded)
            if checkpoint_now:
                ckpt.save_training_state(
                    acc, checkpoints, step, trained, ema, method, generator, cfg.checkpoints_keep, recipe_text
                )
    finally:
        progress.close()

    # per-process weight checksum (before the EMA copy below): processes must agree (sharded: the
    # shards' sums added up over the processes)
    checksum = float(shards.local_sum(student))
    if sharded:
        checksum = float(acc.reduce(torch.tensor([checksum], dtype=torch.float64, device=device), "sum")[0])
    exported: list[str] = []
    final = None
    if step >= cfg.steps and (main or sharded):
        if ema is not None:
            ema.copy_to(trained_parameters(student))  # the final student is the EMA student
        final = shards.gather_full(acc, student, skeleton) if sharded else acc.unwrap_model(student)
        if main:
            save_student(run, final)
            exported = ["student"]
    counters = acc.reduce(
        torch.tensor([float(method.teacher_forwards)], device=device, dtype=torch.float64), "sum"
    )
    forwards = int(counters.item())
    checksums = gather_object([{"rank": rank, "param_sum": checksum}])
    if main:
        run.append_metrics(
            {
                "event": "end",
                "step": step,
                "teacher_forwards": forwards,
                "param_sums": checksums,
                "exported": exported,
            },
        )
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(
        out=run.path,
        step=step,
        world_size=world,
        teacher_forwards=forwards,
        exported=exported,
        student=final if main else None,
        sharding=shards.FSDP if sharded else shards.DDP,
    )


def _trainable_only(trained: dict[str, Trained], name: str | None) -> None:
    """Gradients for the parameters of network ``name`` only (None: every network's, as declared)."""
    for other, net in trained.items():
        flag = name is None or other == name
        for p in net.trainable:
            p.requires_grad_(flag)


def _stderr_line(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)
