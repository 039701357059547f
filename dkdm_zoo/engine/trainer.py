"""The training loop every method shares, on accelerate. It knows no algorithm: a method hands it
one loss per micro-step. It owns devices, precision, processes, the optimiser, lr schedule, EMA,
checkpoints (atomic), metrics, previews and the final export.

Each process seeds its method generator with ``seed + rank``; the batch size is per process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dkdm_zoo.engine import checkpoint as ckpt
from dkdm_zoo.engine import rundir
from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import Method
from dkdm_zoo.recipes import Recipe

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


def train(
    recipe: Recipe,
    teacher: Any,
    student: nn.Module,
    method: Method,
    out: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Run (or continue, with ``resume``) ``recipe.train.steps`` optimiser steps into ``out``.

    ``stop_at`` ends the run early after that step (checkpointing it), as an interruption would.
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    cfg = recipe.train
    cpu = not torch.cuda.is_available()
    if cpu and cfg.mixed_precision == "fp16":
        raise UserError("train.mixed_precision='fp16' needs a GPU; use 'bf16' or 'no' on CPU")
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard" if cfg.tracker == "tensorboard" else None,
        project_dir=str(out),
    )
    out = Path(out)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    checkpoints = out / "checkpoints"
    device = acc.device
    torch.manual_seed(cfg.seed + rank)

    teacher.to(device, DTYPES[cfg.teacher_dtype])
    student.to(device)
    if cfg.channels_last:
        student.to(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + rank)
    method.batch_size = cfg.batch_size
    method.show_progress = main and not quiet

    latest = ckpt.find_latest(checkpoints) if resume else None
    if latest is not None:
        saved_world = json.loads((latest / "state.json").read_text())["world_size"]
        if saved_world != world:
            raise UserError(
                f"--resume: {latest} was written by {saved_world} processes, this run has {world}; resume with {saved_world}"
            )
    if main:
        ckpt.clean_temp(checkpoints)
        (out / "recipe.toml").write_text(recipe.dumps())
        rundir.write_manifest(out, rundir.manifest(recipe, teacher.spec, student, method.one_step))
    acc.wait_for_everyone()

    method.setup(device, generator, resuming=latest is not None)
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
    )
    lr_schedule = get_scheduler(
        SCHEDULES[cfg.lr_schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )
    ema = EMAModel(student.parameters(), decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    if ema is not None:
        ema.to(device)
    step = 0
    if latest is not None:
        step = _load_checkpoint(latest, rank, student, optimizer, lr_schedule, ema, method, generator, device)

    model = torch.compile(student) if cfg.compile else student
    model, optimizer = acc.prepare(model, optimizer)
    if cfg.tracker != "none":
        acc.init_trackers(
            "dkdm-zoo",
            config={k: v for k, v in asdict(cfg).items() if isinstance(v, int | float | str | bool)},
        )

    processes = gather_object([{"rank": rank, "pid": os.getpid()}])
    if main:
        rundir.append_metrics(
            out,
            {
                "event": "start",
                "step": step,
                "world_size": world,
                "processes": processes,
                "device": str(device),
            },
        )

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    window: dict[str, list[float]] = {}
    window_start, window_samples = time.perf_counter(), 0
    progress = _Progress(enabled=main and not quiet, total=cfg.steps, start=step)
    try:
        while step < end:
            model.train()
            for _ in range(cfg.grad_accum):
                with acc.accumulate(model):
                    with acc.autocast():
                        loss, logs = method.loss(model, cfg.batch_size, step)
                    bad = acc.reduce(
                        torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device), "sum"
                    )
                    if float(bad) > 0:
                        last = ckpt.find_latest(checkpoints)
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step + 1}; the run stopped, last good checkpoint: "
                            f"{last if last is not None else 'none'} (lower train.lr, raise train.grad_clip or use "
                            "train.mixed_precision='no', then --resume)"
                        )
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for key, value in {"loss": float(loss.detach()), **logs}.items():
                    window.setdefault(key, []).append(value)
                window_samples += cfg.batch_size * world
            lr_schedule.step()
            if ema is not None:
                ema.step(student.parameters())
            step += 1
            progress.update(
                step, window["loss"][-1], window_samples / max(time.perf_counter() - window_start, 1e-9)
            )

            if step % cfg.log_every == 0 or step == end:
                record = _metrics_record(acc, method, step, window, window_samples, window_start, lr_schedule)
                if main:
                    rundir.append_metrics(out, record)
                    if cfg.tracker != "none":
                        acc.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=step)
                window, window_start, window_samples = {}, time.perf_counter(), 0
            if cfg.preview_every and (step % cfg.preview_every == 0 or step == end):
                _preview(acc, out, step, student, ema, method, cfg, progress)
            if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == end):
                _save_checkpoint(
                    acc,
                    checkpoints,
                    step,
                    student,
                    optimizer,
                    lr_schedule,
                    ema,
                    method,
                    generator,
                    cfg.checkpoints_keep,
                )
    finally:
        progress.close()

    # per-process weight checksum (before the EMA copy below): processes must agree
    checksum = float(sum(p.detach().double().sum() for p in student.parameters()))
    exported: list[str] = []
    if main and step >= cfg.steps:
        if ema is not None:
            ema.copy_to(student.parameters())  # the final student is the EMA student
        exported = rundir.export_student(out, acc.unwrap_model(student), teacher.spec)
    forwards = int(acc.reduce(torch.tensor([float(method.teacher_forwards)], device=device), "sum"))
    checksums = gather_object([{"rank": rank, "param_sum": checksum}])
    if main:
        rundir.append_metrics(
            out,
            {
                "event": "end",
                "step": step,
                "teacher_forwards": forwards,
                "param_sums": checksums,
                "exported": exported,
            },
        )
        if exported and cfg.final_eval_samples > 0:
            from dkdm_zoo.evaluation.report import final_report

            final_report(
                out, cfg.final_eval_samples, teacher=teacher, seed=cfg.seed, device=device, quiet=quiet
            )
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(out=out, step=step, world_size=world, teacher_forwards=forwards, exported=exported)


def _metrics_record(acc, method, step, window, samples, start, lr_schedule) -> dict[str, Any]:
    means = {k: sum(v) / len(v) for k, v in window.items()}
    loss = acc.reduce(torch.tensor([means.pop("loss")], device=acc.device), "mean")
    counts = [float(method.teacher_forwards), float(getattr(method, "teacher_calls", 0))]
    forwards, calls = acc.reduce(torch.tensor(counts, device=acc.device, dtype=torch.float64), "sum").tolist()
    return {
        "step": step,
        "loss": float(loss),
        "lr": float(lr_schedule.get_last_lr()[0]),
        "samples_per_s": samples / max(time.perf_counter() - start, 1e-9),
        "teacher_forwards": int(forwards),  # samples through the teacher, all processes
        "teacher_calls": int(calls),  # batched teacher forward calls, all processes
        **means,
    }


# images per decoder call: a latent teacher's VAE at 512 px is the slow part on a CPU
PREVIEW_DECODE_CHUNK = 4


@torch.no_grad()
def _preview(acc, out: Path, step: int, student: nn.Module, ema, method: Method, cfg, progress) -> None:
    """The EMA student's preview grid, with a progress bar (sampler steps, then decoding) and its
    wall time in metrics.jsonl: at train.preview_samples x train.preview_steps it can outlast a short run."""
    if acc.is_main_process:
        start = time.perf_counter()
        params = list(student.parameters())
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        student.eval()
        n = cfg.preview_samples
        steps = 1 if method.one_step else cfg.preview_steps
        total = (0 if method.one_step else steps) + math.ceil(n / PREVIEW_DECODE_CHUNK)
        with progress.side_task(f"preview {n} x {steps} steps", total) as advance:
            samples = method.sample(
                student,
                n,
                steps=cfg.preview_steps,
                generator=torch.Generator().manual_seed(cfg.seed),
                decode=False,
                progress=advance,
            )
            images = []
            for chunk in samples.split(PREVIEW_DECODE_CHUNK):
                images.append(method.teacher.decode(chunk).float().cpu())
                advance(1)
        student.train()
        if ema is not None:
            ema.restore(params)
        rundir.save_preview(out, step, torch.cat(images))
        rundir.append_metrics(
            out, {"event": "preview", "step": step, "samples": n, "wall_s": time.perf_counter() - start}
        )
    acc.wait_for_everyone()


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "method": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _save_checkpoint(
    acc, checkpoints: Path, step, student, optimizer, lr_schedule, ema, method, generator, keep
) -> None:
    from safetensors.torch import save_model

    temp = ckpt.temp_folder(checkpoints, step)
    rank = acc.process_index
    if acc.is_main_process:
        ckpt.clean_temp(checkpoints)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    ckpt.save_mixed(method.state_dict(), temp, f"method-rank{rank}")
    ckpt.save_mixed(_rng_state(generator), temp, f"rng-rank{rank}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_model(student, str(temp / "student.safetensors"))
        ckpt.fsync_path(temp / "student.safetensors")
        if ema is not None:
            state = ema.state_dict()
            shadow = {
                name: p
                for (name, _), p in zip(student.named_parameters(), state.pop("shadow_params"), strict=True)
            }
            ckpt.save_mixed({**state, **shadow}, temp, "ema")
        ckpt.save_torch(optimizer.state_dict(), temp / "optimizer.pt")
        ckpt.write_json(temp / "lr_schedule.json", lr_schedule.state_dict())
        ckpt.write_json(
            temp / "state.json", {"step": step, "world_size": acc.num_processes}
        )  # last: marks complete
        ckpt.publish(temp, checkpoints, step, keep)
    acc.wait_for_everyone()


def _load_checkpoint(
    folder: Path, rank, student, optimizer, lr_schedule, ema, method, generator, device
) -> int:
    from safetensors.torch import load_model

    load_model(student, str(folder / "student.safetensors"), device=str(device))
    if ema is not None and (folder / "ema.json").exists():
        state = ckpt.load_mixed(folder, "ema")
        names = [name for name, _ in student.named_parameters()]
        state["shadow_params"] = [state.pop(name).to(device) for name in names]
        ema.load_state_dict(state)
    optimizer.load_state_dict(ckpt.load_torch(folder / "optimizer.pt", device))
    lr_schedule.load_state_dict(json.loads((folder / "lr_schedule.json").read_text()))
    method.load_state_dict(ckpt.load_mixed(folder, f"method-rank{rank}"))
    rng = ckpt.load_mixed(folder, f"rng-rank{rank}")
    torch.set_rng_state(rng["torch"].to(torch.uint8))
    generator.set_state(rng["method"].to(torch.uint8))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"].to(torch.uint8))
    return int(json.loads((folder / "state.json").read_text())["step"])


class _Progress:
    """A rich bar with step, loss, samples/s and ETA (main process, not quiet), and bars for side work."""

    def __init__(self, *, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    @contextlib.contextmanager
    def side_task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A second bar under the training bar while other work runs (previews); yields ``advance(k)``."""
        if self.bar is None:
            yield lambda k=1: None
            return
        task = self.bar.add_task(description, total=total, info="")
        try:
            yield lambda k=1: self.bar.advance(task, k)
        finally:
            self.bar.remove_task(task)

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=f"loss {loss:.4f}  {rate:.1f} samples/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
