"""GPU speed and memory of SiD on Stable Diffusion 1.5's full-size UNet: fp32 vs bf16 vs bf16 + compile
vs bf16 + activation checkpointing, each through the CLI in its own process, and the dry-run plan beside it.

The teacher is a random-weight stable-diffusion-v1-5 folder written by ``testing.hub_fixtures.build_sd15``
(``--size full``: the real UNet, 860M parameters, 64 x 64 latents, the real CLIP text encoder and VAE).
SiD holds three networks of that size: the frozen teacher, the generator (``--student teacher``: the
teacher's own UNet, copied) and the fake score, the last two with AdamW, the generator with its EMA.
Each mode runs

    dkdm-zoo distill --teacher latent-sd@FOLDER --student teacher --method sid --steps S
                     --batch-size B --set train.log_every=W (+ the mode's --set train.* keys)

and reads samples/s from metrics.jsonl's log windows, the first window (warm-up, compilation) dropped;
s/step is B / samples/s. Peak memory is ``torch.cuda.max_memory_allocated`` in that process (recorded at
exit). The plan is ``distill --dry-run --json --gpu H200`` of the fp32 and bf16 commands.

Run (CUDA machine): python -m benchmarks.gpu_sid_sd
Smoke test on CPU:  python -m benchmarks.gpu_sid_sd --size narrow --steps 2 --log-every 1 --batch 1 --modes fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, command_line, machine, parse_or_work

ROOT = Path(__file__).resolve().parents[1]
MODES: dict[str, dict[str, Any]] = {
    "fp32": {"mixed_precision": '"no"', "teacher_dtype": '"float32"'},
    "bf16": {"mixed_precision": '"bf16"', "teacher_dtype": '"bfloat16"'},
    "bf16-compile": {
        "mixed_precision": '"bf16"',
        "teacher_dtype": '"bfloat16"',
        "compile": "true",
        "channels_last": "true",
    },
    "bf16-ckpt": {
        "mixed_precision": '"bf16"',
        "teacher_dtype": '"bfloat16"',
        "activation_checkpointing": "true",
    },
}


def distill_args(teacher: Path, out: Path, mode: str, args: argparse.Namespace) -> list[str]:
    argv = [
        "distill", "--teacher", f"latent-sd@{teacher}", "--student", "teacher", "--method", "sid",
        "--steps", str(args.steps), "--batch-size", str(args.batch), "--out", str(out), "--quiet",
        "--set", 'teacher.prompts=["a photo of a cat", "a red bicycle", "a city at night"]',
        "--set", "train.checkpoint_every=0", "--set", "train.preview_every=0",
        "--set", f"train.log_every={args.log_every}",
    ]  # fmt: skip
    for key, value in MODES[mode].items():
        argv += ["--set", f"train.{key}={value}"]
    return argv


def worker(record: Path, argv: list[str]) -> None:
    """One mode's process: the CLI, then its peak accelerator memory and resident set into ``record``."""
    import atexit

    def write() -> None:
        import torch

        status = Path("/proc/self/status").read_text()
        hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        cuda = torch.cuda.is_available()
        record.write_text(
            json.dumps(
                {
                    "peak_accelerator_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                    "peak_accelerator_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
                    "peak_rss_bytes": int(hwm.split()[1]) * 1024,
                }
            )
        )

    atexit.register(write)
    from dkdm_zoo.cli.app import main

    sys.argv = ["dkdm-zoo", *argv]
    main()


def measure(teacher: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    record, out = work / f"peak-{mode}.json", work / f"run-{mode}"
    cmd = [sys.executable, "-m", "benchmarks.gpu_sid_sd", "--worker", str(record), "--"]
    cmd += distill_args(teacher, out, mode, args)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.mode_timeout)
    except subprocess.TimeoutExpired:
        return {
            "error": f"did not finish in --mode-timeout {args.mode_timeout:.0f} s",
            "wall_s": args.mode_timeout,
        }
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:], "wall_s": wall}
    windows = [
        r["samples_per_s"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if "samples_per_s" in (r := json.loads(line))
    ]
    timed = windows[1:] or windows  # the first window holds warm-up and compilation
    s_per_step = args.batch / statistics.median(timed)
    return {
        "s_per_step": s_per_step,
        "s_per_step_windows": [round(args.batch / w, 4) for w in timed],
        "first_window_s_per_step": round(args.batch / windows[0], 4),
        "samples_per_s": args.batch / s_per_step,
        "wall_s": wall,
        **json.loads(record.read_text()),
    }


def plan(teacher: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dkdm_zoo.cli.app", *distill_args(teacher, work / "plan", mode, args)]
    cmd += ["--dry-run", "--json", "--gpu", "H200"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    full = json.loads(proc.stdout)
    keep = ("memory_per_process_bytes", "flops", "teacher_forwards", "verdict")
    return {k: full[k] for k in keep if k in full}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["full", "narrow"], default="full")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--mode-timeout", type=float, default=240.0, help="seconds per mode's process")
    parser.add_argument("--no-plan", action="store_true", help="skip the dry-run plans")
    parser.add_argument(
        "--work", type=Path, help="folder for the teacher and runs (default: a temporary one)"
    )
    args = parse_or_work(parser, worker)
    if args is None:
        return
    from dkdm_zoo.testing.hub_fixtures import build_sd15

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        teacher = build_sd15(work / "sd15", size=args.size)
        build_s = time.perf_counter() - start
        print(f"built the {args.size} SD 1.5 folder in {build_s:.0f} s", flush=True)
        plans = {
            m: plan(teacher, work, m, args) for m in ("fp32", "bf16") if m in args.modes and not args.no_plan
        }
        results: dict[str, Any] = {}
        for mode in args.modes:
            results[mode] = measure(teacher, work, mode, args)
            r = results[mode]
            if "error" in r:
                print(f"{mode}: FAILED after {r['wall_s']:.0f} s\n{r['error']}", flush=True)
            else:
                print(
                    f"{mode}: {r['s_per_step']:.4f} s/step {r['s_per_step_windows']} (first window "
                    f"{r['first_window_s_per_step']}), peak {(r['peak_accelerator_bytes'] or 0) / 2**30:.1f} GiB "
                    f"accelerator, {r['peak_rss_bytes'] / 2**30:.1f} GiB RSS, process {r['wall_s']:.0f} s",
                    flush=True,
                )
    base = results.get("fp32", {}).get("s_per_step")
    for r in results.values():
        if base and "s_per_step" in r:
            r["speedup_over_fp32"] = base / r["s_per_step"]
    report = {
        "command": command_line(),
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "log_every": args.log_every,
        "build_s": build_s,
        "plans": plans,
        "results": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "gpu_sid_sd.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({m: r.get("speedup_over_fp32") for m, r in results.items()}))


if __name__ == "__main__":
    main()
