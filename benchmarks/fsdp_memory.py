"""Peak host memory per process, DDP against FSDP2, for SiD on a Stable Diffusion 1.5 layout: two
``torchrun --nproc_per_node 2`` runs on CPU (gloo) in one go, and the dry-run plan's figure beside each.

The teacher is a random-weight SD 1.5 folder (``testing.hub_fixtures.build_sd15``, narrow VAE and text
encoder) whose UNet has the real SD 1.5 layout (4 levels, 2 layers per block, cross-attention in 3
levels, 8 heads, 32 groups) at ``--width`` of its channels (320/640/1280/1280 x width), 32 x 32
latents. SiD holds three networks of that size: the frozen teacher, the generator (initialised from
the teacher) and the fake score, the last two with AdamW (and the generator's EMA).

Each process records its peak resident set (VmHWM: start-up included) when it exits, and when
training starts (the set-up peak: networks built and sharded, the method set up); the plan is
``distill --dry-run --json --processes 2`` of the same recipe. ``--student teacher``: the generator is
a copy of the teacher's UNet too (two of the three networks are copies of the teacher's), written to
``--out``. Run from the repo root, alone:

    nice -n 10 python -m benchmarks.fsdp_memory --width 0.3
    nice -n 10 python -m benchmarks.fsdp_memory --width 0.3 --student teacher --out fsdp_memory_teacher_copy.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, command_line, machine, parse_or_work

ROOT = Path(__file__).resolve().parents[1]
SD15_CHANNELS = (320, 640, 1280, 1280)


def build_teacher(folder: Path, width: float) -> int:
    """The SD 1.5 folder with its UNet at ``width`` of the real channels; returns the UNet's parameters."""
    import torch
    from diffusers import UNet2DConditionModel

    from dkdm_zoo.testing import hub_configs as configs
    from dkdm_zoo.testing.hub_fixtures import build_sd15

    build_sd15(folder, size="narrow")
    config = {k: v for k, v in configs.sd_unet("full").items() if not k.startswith("_")}
    config["block_out_channels"] = [int(round(c * width / 32)) * 32 for c in SD15_CHANNELS]
    config["cross_attention_dim"] = configs.sd_text_encoder("narrow", 1)["hidden_size"]
    config["sample_size"] = 32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet")
    return sum(p.numel() for p in unet.parameters())


def recipe_args(
    teacher: Path, out: Path, sharding: str, steps: int, batch: int, student: str = "unet"
) -> list[str]:
    """``student``: ``unet`` (a network of its own at the teacher's channels) or ``teacher`` (a copy of
    the teacher's UNet, as the fake score is)."""
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(teacher / "unet")
    channels = json.dumps(list(config["block_out_channels"]))
    own = ["--set", f"student.block_out_channels={channels}", "--set", "student.layers_per_block=2"]
    return [
        "distill", "--teacher", f"latent-sd@{teacher}", "--student", student, "--method", "sid",
        "--steps", str(steps), "--batch-size", str(batch), "--out", str(out), "--quiet",
        "--set", "teacher.prompts=[\"a photo of a cat\", \"a red bicycle\"]",
        *(own if student == "unet" else []),
        "--set", "train.checkpoint_every=0", "--set", "train.preview_every=0", "--set", "train.log_every=1",
        "--set", f"train.sharding=\"{sharding}\"",
    ]  # fmt: skip


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return int(fields["VmHWM"].split()[0]) * 1024


def worker(record: Path, argv: list[str]) -> None:
    """One torchrun process: the CLI, then this process's peak resident set into ``record``-RANK.json:
    at exit, and when training starts (set-up: networks built, sharded, the method set up), read as
    the engine creates its training bar."""
    import atexit

    from dkdm_zoo.engine import trainer

    marks: dict[str, int] = {}
    bar = trainer.TrainingProgress

    class MarkedProgress(bar):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            marks.setdefault("setup_peak_rss_bytes", peak_rss_bytes())
            super().__init__(**kwargs)

    trainer.TrainingProgress = MarkedProgress

    def write() -> None:
        rank = os.environ.get("RANK", "0")
        Path(f"{record}-{rank}.json").write_text(
            json.dumps({"rank": int(rank), "peak_rss_bytes": peak_rss_bytes(), **marks})
        )

    atexit.register(write)
    from dkdm_zoo.cli.app import main

    sys.argv = ["dkdm-zoo", *argv]
    main()


def measure(teacher: Path, work: Path, sharding: str, args: argparse.Namespace) -> dict[str, Any]:
    record = work / f"peak-{sharding}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571"]
    cmd += ["-m", "benchmarks.fsdp_memory", "--worker", str(record), "--"]
    cmd += recipe_args(teacher, work / f"run-{sharding}", sharding, args.steps, args.batch_size, args.student)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{sharding} run failed:\n{proc.stderr[-4000:]}")
    marks = [json.loads(Path(f"{record}-{r}.json").read_text()) for r in (0, 1)]
    peaks = [m["peak_rss_bytes"] for m in marks]
    setup = [m.get("setup_peak_rss_bytes") for m in marks]
    plan_cmd = [sys.executable, "-m", "dkdm_zoo.cli.app"]
    plan_cmd += recipe_args(teacher, work / "plan", sharding, args.steps, args.batch_size, args.student)
    plan_cmd += ["--dry-run", "--json", "--processes", "2"]
    plan = json.loads(
        subprocess.run(plan_cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True).stdout
    )
    return {
        "peak_rss_bytes": peaks,
        "setup_peak_rss_bytes": setup,
        "plan": plan["memory_per_process"][sharding],
        "verdict": plan["verdict"],
    }


def baseline_rss() -> int:
    """Peak resident set of a process that imported what a distill process imports, and nothing else."""
    code = (
        "import torch, diffusers, transformers, accelerate, dkdm_zoo.engine.trainer, dkdm_zoo.cli.app;"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(out.stdout.strip()) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=float, default=0.3, help="share of SD 1.5's UNet channels")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--student",
        choices=("unet", "teacher"),
        default="unet",
        help="SiD's generator: its own UNet or a teacher copy",
    )
    parser.add_argument("--out", default="fsdp_memory.json", help="file name under benchmarks/results")
    args = parse_or_work(parser, worker)
    if args is None:
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        unet_params = build_teacher(work / "sd15", args.width)
        results = {s: measure(work / "sd15", work, s, args) for s in ("ddp", "fsdp")}
    base = baseline_rss()
    ddp, fsdp = results["ddp"], results["fsdp"]
    report = {
        "command": command_line(),
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "unet_parameters": unet_params,
        "width": args.width,
        "student": args.student,
        "steps": args.steps,
        "batch_size_per_process": args.batch_size,
        "baseline_rss_bytes": base,
        **results,
        "ratio_fsdp_over_ddp_peak": max(fsdp["peak_rss_bytes"]) / max(ddp["peak_rss_bytes"]),
        "plan_over_measured": {s: r["plan"]["total"] / max(r["peak_rss_bytes"]) for s, r in results.items()},
        "plan_plus_baseline_over_measured": {
            s: (r["plan"]["total"] + base) / max(r["peak_rss_bytes"]) for s, r in results.items()
        },
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps(report, indent=2))
    gib = 2**30
    for s, r in results.items():
        print(f"{s}: peak RSS per process {[round(p / gib, 2) for p in r['peak_rss_bytes']]} GiB "
              f"(at the end of set-up {[round(p / gib, 2) for p in r['setup_peak_rss_bytes']]}); "
              f"plan {r['plan']['total'] / gib:.2f} GiB (+ baseline {base / gib:.2f} GiB)")  # fmt: skip
    print(
        f"fsdp / ddp peak: {report['ratio_fsdp_over_ddp_peak']:.3f}; load average {report['machine']['load_average']}"
    )


if __name__ == "__main__":
    main()
