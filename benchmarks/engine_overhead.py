"""Engine overhead: one DKDM step through `dkdm_zoo.engine.train` vs a bare hand-written PyTorch loop.

Both do the same work per step on the same teacher, student initial weights, batch and pool: draw b
distinct pool slots (randperm), reset finished slots, ONE teacher forward at per-sample timesteps,
the per-sample ancestral step written back to the pool, student forward, eps MSE, backward, grad
clipping, AdamW step and EMA (or neither, with ``--minimal``). The engine run uses the DKDM method
(pool initialisation replaced by a prepared random pool: the offline init is excluded), with
checkpoints, previews and the tracker off and metrics logged every 10 steps (the default).

What is timed: the wall time between the starts of consecutive steps (for the engine, consecutive
calls of ``method.loss``), so everything the engine does per step counts (autocast, NaN check,
optimiser, lr schedule, EMA, progress, metrics lines). The first ``--warmup`` steps of every
repetition are dropped. Engine and bare repetitions alternate (E B B E E B ...), and the ratio is
the median of per-pair ratios. Peak memory: each mode runs alone in a fresh process (CPU: peak RSS,
``ru_maxrss``; GPU: ``torch.cuda.max_memory_allocated``).

Run: python -m benchmarks.engine_overhead              # digits 1x8x8 and CIFAR 3x32x32, CPU
     python -m benchmarks.engine_overhead --settings cifar --batch-cifar 128   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import setups
from benchmarks.common import write_result

GOAL = 1.03


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Setting:
    def __init__(self, name: str, batch: int, preset: str, rho: float = 0.4):
        self.name, self.batch, self.preset = name, batch, preset
        self.teacher = setups.teacher(name)
        spec = self.teacher.spec
        self.student0 = setups.student(spec, preset)
        self.init_state = {k: v.clone() for k, v in self.student0.state_dict().items()}
        self.rho = rho
        self.pool = setups.random_pool(spec, max(1, round(rho * spec.num_train_timesteps)) * batch)

    def fresh_student(self) -> torch.nn.Module:
        self.student0.load_state_dict(self.init_state)
        return self.student0


def engine_times(s: Setting, steps: int, warmup: int, minimal: bool) -> list[float]:
    from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
    from dkdm_zoo.engine import train
    from dkdm_zoo.runs import Run

    cfg = TrainConfig(
        steps=warmup + steps + 1,
        batch_size=s.batch,
        checkpoint_every=0,
        preview_every=0,
        ema_decay=0.0 if minimal else 0.9999,
        grad_clip=0.0 if minimal else 1.0,
    )
    recipe = Recipe("bench", Component("ddpm-unet"), Component("unet", {"preset": s.preset}), train=cfg)
    method = setups.PrefilledDKDM(s.teacher, s.fresh_student(), rho=s.rho, pool=s.pool)
    stamps: list[float] = []
    loss = method.loss

    def timed_loss(*args: Any, **kwargs: Any):
        stamps.append(time.perf_counter())
        return loss(*args, **kwargs)

    method.loss = timed_loss  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        train(recipe, s.teacher, s.student0, method, Run(out), quiet=True)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][warmup:]


def bare_times(s: Setting, steps: int, warmup: int, minimal: bool) -> list[float]:
    """The same DKDM step written directly against the networks, the schedule tensors and AdamW."""
    dev = device()
    unet = s.teacher.unet.to(dev)
    student = s.fresh_student().to(dev).train()
    sched = s.teacher.schedule
    T = s.teacher.spec.num_train_timesteps
    abar = sched.alphas_cumprod.to(dev, torch.float64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    betas = 1 - abar / abar_prev
    coef_x0 = (abar_prev.sqrt() * betas / (1 - abar)).float()
    coef_xt = ((1 - betas).sqrt() * (1 - abar_prev) / (1 - abar)).float()
    if s.teacher.spec.variance_type == "fixed_large":
        sigma = torch.cat([((1 - abar_prev) / (1 - abar) * betas)[1:2], betas[1:]]).sqrt().float()
    else:
        sigma = ((1 - abar_prev) / (1 - abar) * betas).clamp(min=1e-20).sqrt().float()
    sqrt_abar, sqrt_1m = abar.sqrt().float(), (1 - abar).sqrt().float()
    pool_x, pool_k = s.pool[0].clone().to(dev), s.pool[1].clone().to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    params = list(student.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    shadow = [p.detach().clone() for p in params]
    stamps = []
    for _ in range(warmup + steps + 1):
        stamps.append(time.perf_counter())
        idx = torch.randperm(len(pool_x), generator=g, device=dev)[: s.batch]
        finished = idx[pool_k[idx] < 0]
        if len(finished):
            pool_x[finished] = torch.randn(pool_x[finished].shape, generator=g, device=dev)
            pool_k[finished] = T - 1
        x, k = pool_x[idx], pool_k[idx]
        with torch.no_grad():
            eps_t = unet(x, k).sample.float()
            view = (-1, 1, 1, 1)
            x0 = ((x - sqrt_1m[k].view(view) * eps_t) / sqrt_abar[k].view(view)).clamp(-1, 1)
            mean = coef_x0[k].view(view) * x0 + coef_xt[k].view(view) * x
            noise = torch.randn(x.shape, generator=g, device=dev)
            pool_x[idx] = mean + (k > 0).float().view(view) * sigma[k].view(view) * noise
            pool_k[idx] = k - 1
        loss = F.mse_loss(student(x, k).float(), eps_t)
        loss.backward()
        if not minimal:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if not minimal:
            with torch.no_grad():
                torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - 0.9999)
        float(loss.detach())  # the engine reads the loss every step too
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][warmup:]


MODES = {"engine": engine_times, "bare": bare_times}


def peak_memory(setting: str, batch: int, preset: str, mode: str, minimal: bool) -> dict[str, float]:
    """Run one mode alone in this process (a fresh subprocess on CPU) and report its peak memory."""
    s = Setting(setting, batch, preset)
    if device().type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        MODES[mode](s, 3, 1, minimal)
        return {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}
    before = rss_mib("VmRSS")
    reset_peak_rss()
    MODES[mode](s, 3, 1, minimal)
    return {"peak_rss_mib": rss_mib("VmHWM"), "rss_after_setup_mib": before}


def rss_mib(field: str) -> float:
    """VmRSS / VmHWM (peak) of this process from /proc (Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0) so the peak covers the steps, not the setup."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def memory_subprocess(setting: str, batch: int, preset: str, mode: str, minimal: bool) -> dict[str, float]:
    if device().type == "cuda":
        return peak_memory(setting, batch, preset, mode, minimal)
    cmd = [sys.executable, "-m", "benchmarks.engine_overhead", "--threads", str(torch.get_num_threads())]
    cmd += ["--memory-probe"]
    cmd += [f"{setting}:{batch}:{preset}:{mode}:{int(minimal)}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_setting(name: str, batch: int, preset: str, steps: int, warmup: int, reps: int, minimal: bool):
    s = Setting(name, batch, preset)
    times: dict[str, list[float]] = {"engine": [], "bare": []}
    per_rep: dict[str, list[float]] = {"engine": [], "bare": []}
    for rep in range(reps):
        order = ["engine", "bare"] if rep % 2 == 0 else ["bare", "engine"]
        for mode in order:
            t = MODES[mode](s, steps, warmup, minimal)
            times[mode] += t
            per_rep[mode].append(statistics.median(t))
    ratios = [e / b for e, b in zip(per_rep["engine"], per_rep["bare"], strict=True)]
    row: dict[str, Any] = {
        "setting": name,
        "shape": list(s.teacher.spec.sample_shape),
        "teacher_params": setups.params(s.teacher.unet),
        "student_preset": preset,
        "student_params": setups.params(s.student0),
        "batch": batch,
        "pool_slots": len(s.pool[0]),
        "minimal": minimal,
        "steps_per_rep": steps,
        "warmup": warmup,
        "reps": reps,
        "threads": torch.get_num_threads(),
        "ratio_engine_over_bare": statistics.median(ratios),
        "ratio_of_min_step": min(times["engine"]) / min(times["bare"]),
        "ratios_per_rep": ratios,
    }
    for mode in MODES:
        med = statistics.median(per_rep[mode])
        row[mode] = {
            "step_s_median": med,
            "step_s_min": min(times[mode]),
            "step_s_per_rep": per_rep[mode],
            "samples_per_s": batch / med,
            **memory_subprocess(name, batch, preset, mode, minimal),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", nargs="+", default=["digits", "cifar"], choices=["digits", "cifar"])
    parser.add_argument("--batch-digits", type=int, default=64)
    parser.add_argument("--batch-cifar", type=int, default=2)
    parser.add_argument("--preset-digits", default="small")
    parser.add_argument("--preset-cifar", default="base")
    parser.add_argument("--steps-digits", type=int, default=30)
    parser.add_argument("--steps-cifar", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--minimal", action="store_true", help="no EMA, no grad clipping in either loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, batch, preset, mode, minimal = args.memory_probe.split(":")
        print(json.dumps(peak_memory(name, int(batch), preset, mode, bool(int(minimal)))))
        return

    rows = []
    for name in args.settings:
        batch, preset, steps = (
            (args.batch_digits, args.preset_digits, args.steps_digits)
            if name == "digits"
            else (args.batch_cifar, args.preset_cifar, args.steps_cifar)
        )
        rows.append(run_setting(name, batch, preset, steps, args.warmup, args.reps, args.minimal))
    mem_key = "peak_gpu_mib" if device().type == "cuda" else "peak_rss_mib"
    print(f"device {device()}, threads {torch.get_num_threads()}, EMA+clip {'off' if args.minimal else 'on'}")
    print(
        f"{'setting':<8} {'batch':>5} {'engine s/step':>13} {'bare s/step':>11} {'engine/bare':>11} "
        f"{'min ratio':>9} {'eng samp/s':>10} {'bare samp/s':>11} {'eng MiB':>8} {'bare MiB':>8}"
    )
    for r in rows:
        e, b = r["engine"], r["bare"]
        print(
            f"{r['setting']:<8} {r['batch']:>5} {e['step_s_median']:>13.4f} {b['step_s_median']:>11.4f} "
            f"{r['ratio_engine_over_bare']:>11.3f} {r['ratio_of_min_step']:>9.3f} {e['samples_per_s']:>10.1f} {b['samples_per_s']:>11.1f} "
            f"{e[mem_key]:>8.0f} {b[mem_key]:>8.0f}"
        )
    name = "engine_overhead_minimal" if args.minimal else "engine_overhead"
    path = write_result(name, {"goal_ratio": GOAL, "device": str(device()), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
