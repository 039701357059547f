"""Scaling: DKDM step time and samples/s against batch size and student size, and 2 processes vs 1.

Part 1 (in process): engine steps (``dkdm_zoo.engine.train``, DKDM with a prepared random pool,
EMA + grad clipping on, checkpoints/previews off) for each (resolution, student preset, batch);
the grid's configurations are interleaved inside every repetition; timed as in engine_overhead.py
(start of one ``method.loss`` call to the next, warm-up steps dropped), median over repetitions.

Part 2 (the CLI): ``torchrun --nproc_per_node 2 -m dkdm_zoo.cli.app distill ...`` against the same
command as one plain process, at the same per-process batch, on the digits-sized teacher saved to a
temporary folder. Throughput is read from metrics.jsonl (samples/s of all processes per logging
window, the first window dropped as warm-up), runs alternate 1, 2, 2, 1, ... and the ratio is the
median of per-pair ratios. ``--threads`` torch threads per process (OMP_NUM_THREADS) in both.

Run: python -m benchmarks.scaling
     python -m benchmarks.scaling --presets tiny small base --batches 16 64 256 --cifar-presets tiny small base
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import write_result
from benchmarks.engine_overhead import Setting, engine_times


def grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = [("digits", p, b) for p in args.presets for b in args.batches]
    configs += [("cifar", p, b) for p in args.cifar_presets for b in args.cifar_batches]
    settings = {c: Setting(c[0], c[2], c[1]) for c in configs}
    per_rep: dict[tuple, list[float]] = {c: [] for c in configs}
    for _ in range(args.reps):
        for c in configs:
            steps = args.steps if c[0] == "digits" else args.cifar_steps
            per_rep[c].append(statistics.median(engine_times(settings[c], steps, args.warmup, False)))
    rows = []
    for c in configs:
        med = statistics.median(per_rep[c])
        s = settings[c]
        rows.append(
            {
                "setting": c[0],
                "resolution": s.teacher.spec.resolution,
                "preset": c[1],
                "student_params": sum(p.numel() for p in s.student0.parameters()),
                "batch": c[2],
                "step_s_median": med,
                "step_s_per_rep": per_rep[c],
                "samples_per_s": c[2] / med,
            }
        )
    return rows


def cli_run(nproc: int, teacher: Path, out: Path, args: argparse.Namespace) -> float:
    """Samples/s (all processes) of one CLI run, from metrics.jsonl after the first window."""
    from dkdm_zoo.runs import Run

    distill = ["-m", "dkdm_zoo.cli.app", "distill", "--teacher", f"ddpm-unet@{teacher}", "--student", "unet"]
    distill += [
        "--preset",
        args.ddp_preset,
        "--steps",
        str(args.ddp_steps),
        "--batch-size",
        str(args.ddp_batch),
    ]
    distill += ["--out", str(out), "--overwrite", "--quiet"]
    for kv in (
        "train.preview_every=0",
        "train.checkpoint_every=0",
        f"train.log_every={args.ddp_log_every}",
        "method.pool_init='ddim'",
        "method.pool_init_steps=1",
    ):
        distill += ["--set", kv]
    if nproc == 0:  # one plain process, no launcher
        cmd = [sys.executable, *distill]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        cmd += ["--master_port", str(args.master_port), *distill]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    windows = [r["samples_per_s"] for r in Run(out).read_metrics() if "samples_per_s" in r]
    return statistics.median(windows[1:] or windows)


def ddp(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import setups

    # 0: a plain process; 1 and 2: torchrun with 1 and 2 processes (same per-process batch)
    rates: dict[int, list[float]] = {0: [], 1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = setups.save_teacher("digits", Path(tmp) / "teacher")
        for rep in range(args.ddp_reps):
            for nproc in (0, 1, 2) if rep % 2 == 0 else (2, 1, 0):
                rates[nproc].append(cli_run(nproc, teacher, Path(tmp) / f"run{nproc}", args))
    ratios = [b / a for a, b in zip(rates[0], rates[2], strict=True)]
    return {
        "preset": args.ddp_preset,
        "batch_per_process": args.ddp_batch,
        "steps": args.ddp_steps,
        "threads_per_process": args.threads,
        "samples_per_s_1proc": rates[0],
        "samples_per_s_torchrun_1proc": rates[1],
        "ratio_2proc_over_torchrun_1proc": statistics.median(
            [b / a for a, b in zip(rates[1], rates[2], strict=True)]
        ),
        "samples_per_s_2proc": rates[2],
        "ratio_2proc_over_1proc": statistics.median(ratios),
        "ratios_per_rep": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--cifar-presets", nargs="*", default=["tiny", "base"])
    parser.add_argument("--cifar-batches", nargs="*", type=int, default=[2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cifar-steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--ddp-preset", default="small")
    parser.add_argument("--ddp-batch", type=int, default=32)
    parser.add_argument("--ddp-steps", type=int, default=60)
    parser.add_argument("--ddp-log-every", type=int, default=10)
    parser.add_argument("--ddp-reps", type=int, default=2)
    parser.add_argument("--master-port", type=int, default=29531)
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument(
        "--skip-grid", action="store_true", help="only the 2-process comparison (scaling_ddp.json)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [] if args.skip_grid else grid(args)
    if rows:
        print(f"engine DKDM steps, {torch.get_num_threads()} thread(s), EMA + clip on")
        print(f"{'res':>4} {'preset':<6} {'params':>10} {'batch':>5} {'s/step':>8} {'samples/s':>9}")
    for r in rows:
        print(
            f"{r['resolution']:>4} {r['preset']:<6} {r['student_params']:>10,} {r['batch']:>5} "
            f"{r['step_s_median']:>8.3f} {r['samples_per_s']:>9.1f}"
        )
    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    if rows:
        result["grid"] = rows
    if not args.skip_ddp:
        d = ddp(args)
        result["ddp"] = d
        print(
            f"CLI distill, digits teacher, unet {d['preset']}, batch {d['batch_per_process']}/process, "
            f"{d['threads_per_process']} thread(s)/process: 1 plain process {statistics.median(d['samples_per_s_1proc']):.1f} "
            f"samples/s, torchrun 1 process {statistics.median(d['samples_per_s_torchrun_1proc']):.1f}, "
            f"torchrun 2 processes {statistics.median(d['samples_per_s_2proc']):.1f}; ratio 2 / plain 1 "
            f"{d['ratio_2proc_over_1proc']:.2f}, 2 / torchrun 1 {d['ratio_2proc_over_torchrun_1proc']:.2f}"
        )
    path = write_result("scaling_ddp" if args.skip_grid else "scaling", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
