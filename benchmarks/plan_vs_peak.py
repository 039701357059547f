"""The dry-run plan's memory against one process's measured peak: SiD with a LoRA generator and a LoRA
fake score on the teacher's own frozen UNet, on a random-weight stable-diffusion-v1-5 folder at full
size (``testing.hub_fixtures.build_sd15(size="full")``: 860M UNet, 64 x 64 latents), bf16 teacher,
activation checkpointing, batch 1, one step, on CPU (issue 28's done-when: within 25%).

The measured run is the real CLI in one process; its peak resident set (VmHWM) is read when training
starts (the set-up peak: loading, building, the method set up) and then reset (``/proc/self/clear_refs``),
so the peak read at exit is the training phase's alone; the whole run's peak is the larger of the two.
The plan is ``--dry-run --json`` of the same command (``memory_per_process_bytes``), run at the same
time in another process (one thread each). The plan leaves out the framework itself and the start
(the peak of a process that only imported what distill imports is recorded beside it). Run from the
repo root, alone:

    nice -n 10 python -m benchmarks.plan_vs_peak
    nice -n 10 python -m benchmarks.plan_vs_peak --size narrow --out plan_vs_peak_narrow.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, command_line, machine, parse_or_work
from benchmarks.fsdp_memory import ROOT, baseline_rss, peak_rss_bytes

PROMPTS = '["a photo of a cat", "a red bicycle"]'


def distill_args(teacher: Path, out: Path, lora_rank: int, extra: list[str]) -> list[str]:
    return [
        "distill", "--teacher", f"latent-sd@{teacher}", "--student", "teacher", "--method", "sid",
        "--steps", "1", "--batch-size", "1", "--out", str(out), "--quiet",
        "--set", f"teacher.prompts={PROMPTS}",
        "--set", f"student.lora_rank={lora_rank}",
        "--set", "train.activation_checkpointing=true",
        "--set", "train.teacher_dtype=bfloat16",
        "--set", "train.preview_every=0", "--set", "train.checkpoint_every=0",
        "--set", "train.final_eval_samples=0",
        *extra,
    ]  # fmt: skip


def build(folder: Path, size: str) -> float:
    """The folder (kept between runs: building the full size takes minutes); seconds it took."""
    from dkdm_zoo.testing.hub_fixtures import build_sd15

    start = time.perf_counter()
    if not (folder / "model_index.json").exists():
        build_sd15(folder, size=size)
    return time.perf_counter() - start


def worker(record: Path, argv: list[str]) -> None:
    """The CLI in this process; peaks into ``record``: at training start (then reset) and at exit."""
    import atexit

    from dkdm_zoo.engine import trainer

    marks: dict[str, int] = {}
    bar = trainer.TrainingProgress

    def mark(name: str) -> None:  # the peak since the last mark, what is resident now; then reset
        marks[f"{name}_peak_rss_bytes"] = peak_rss_bytes()
        marks[f"{name}_end_rss_bytes"] = rss_bytes()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: the next phase's peak

    class MarkedProgress(bar):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            if not marks:
                mark("setup")
            super().__init__(**kwargs)

        def close(self) -> None:
            if "training_peak_rss_bytes" not in marks:
                mark("training")  # the loop, before the final student is saved
            super().close()

    trainer.TrainingProgress = MarkedProgress

    def write() -> None:
        mark("after_training")  # saving the final student (the LoRA merged for export), exit
        record.write_text(json.dumps(marks))

    atexit.register(write)
    from dkdm_zoo.cli.app import main

    sys.argv = ["dkdm-zoo", *argv]
    main()


def rss_bytes() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("full", "narrow"), default="full")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dkdm-plan-vs-peak"))
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more --set KEY=VALUE")
    parser.add_argument("--out", default="plan_vs_peak_sd15.json", help="file name under benchmarks/results")
    args = parse_or_work(parser, worker)
    if args is None:
        return
    extra = [a for kv in args.extra for a in ("--set", kv)]
    folder = args.work / f"sd15-{args.size}"
    build_s = build(folder, args.size)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    record = args.work / "peak.json"
    record.unlink(missing_ok=True)
    command = distill_args(folder, args.work / "run", args.lora_rank, [*extra, "--overwrite"])
    plan_command = distill_args(folder, args.work / "plan", args.lora_rank, extra) + ["--dry-run", "--json"]
    before = uptime()
    start = time.perf_counter()
    run = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.plan_vs_peak", "--worker", str(record), "--", *command],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    dry = subprocess.run(
        [sys.executable, "-m", "dkdm_zoo.cli.app", *plan_command],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    plan_s = time.perf_counter() - start
    out, err = run.communicate()
    run_s = time.perf_counter() - start
    after = uptime()
    if run.returncode != 0 or dry.returncode != 0:
        raise SystemExit(
            f"run rc {run.returncode}: {err[-3000:]}\ndry-run rc {dry.returncode}: {dry.stderr[-3000:]}"
        )
    plan = json.loads(dry.stdout)
    marks = json.loads(record.read_text())
    base = baseline_rss()
    planned, training = plan["memory_per_process_bytes"], marks["training_peak_rss_bytes"]
    peak = max(marks[f"{phase}_peak_rss_bytes"] for phase in ("setup", "training", "after_training"))
    report: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "uptime_before": before,
        "uptime_after": after,
        "size": args.size,
        "distill": " ".join(["dkdm-zoo", *command]),
        "dry_run": " ".join(["dkdm-zoo", *plan_command]),
        "build_s": round(build_s, 1),
        "plan_s": round(plan_s, 1),
        "run_s": round(run_s, 1),
        "peak_rss_bytes": peak,
        **marks,
        "baseline_rss_bytes": base,
        "plan_memory_per_process_bytes": planned,
        "plan": plan["memory_per_process"][plan["sharding"]],
        "parameters": plan["parameters"],
        "details": plan["details"],
        "verdict": plan["verdict"],
        "plan_over_measured": planned / peak,
        "plan_plus_baseline_over_measured": (planned + base) / peak,
        "plan_over_training_peak": planned / training,
        "plan_plus_baseline_over_training_peak": (planned + base) / training,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps(report, indent=2))
    gib = 2**30
    print(
        f"peak RSS {peak / gib:.2f} GiB (set-up {marks['setup_peak_rss_bytes'] / gib:.2f}, training "
        f"{training / gib:.2f} from {marks['setup_end_rss_bytes'] / gib:.2f} resident at its start, after "
        f"{marks['after_training_peak_rss_bytes'] / gib:.2f}); plan {planned / gib:.2f} GiB; plan / peak {planned / peak:.3f}, / training "
        f"peak {planned / training:.3f}; + idle process ({base / gib:.2f} GiB): {(planned + base) / peak:.3f}, "
        f"{(planned + base) / training:.3f}\nbefore: {before}\nafter: {after}"
    )


if __name__ == "__main__":
    main()
