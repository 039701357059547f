"""Per-architecture training settings, found by measurement: DKDM learning curves on the digits teachers.

Each point of a grid trains one DKDM student with `dkdm-zoo distill` (the real CLI and engine, the
results table's DKDM settings: rho 0.05, a 4-step DDIM pool initialisation, EMA 0.995, warmup 50),
keeping a checkpoint every `--eval-every` steps. Afterwards every checkpoint's EMA student draws
500 samples with 50-step DDIM from fixed noise (balanced labels for the class-conditional teacher),
scored in the shipped digit classifier's feature space against the 1797 real digits (FD,
precision, recall, class accuracy) and against 500 samples of the teacher's own 50-step DDIM
(FD vs teacher). Every curve point also has its training wall time (from metrics.jsonl).

    python tools/arch_sweep.py run --teacher ddpm --student dit --grid train.lr=1e-3,2e-3,4e-3 \\
        --grid student.patch_size=1,2 --steps 300 --eval-every 100
    python tools/arch_sweep.py run --teacher dit --student unet --set train.lr=2e-3 \\
        --grid method.weighting=none,min-snr --seeds 0 1 --steps 800 --eval-every 200
    python tools/arch_sweep.py table                  # curves -> docs/results/arch-sweep.md

`--grid KEY=V1,V2` is a --set key with the values to try (the grid is their cartesian product);
`--set KEY=V` is fixed for every point. `--defaults` drops the sweep's pinned training settings
(lr is then the student's declared default unless given). The uvit plugin must be importable
(e.g. PYTHONPATH=...:/path/to/site-with-the-plugin). Runs: runs/arch-sweep/<point>-s<seed>/;
curves: runs/arch-sweep/<point>-s<seed>.json (each with its exact command).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_digits import teacher_reference  # tools/ is on sys.path when a tool runs

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "runs" / "arch-sweep"
RESULTS = REPO / "docs" / "results"
EVAL_N = 500
BATCH = 64

TEACHERS = ("ddpm", "dit")
STUDENTS = ("unet", "dit", "convnext", "uvit")
# The results table's DKDM settings (tools/results_digits.py), the pinned base of every point.
DKDM = ["--method", "dkdm", "--set", "method.rho=0.05", "--set", 'method.pool_init="ddim"',
        "--set", "method.pool_init_steps=4"]  # fmt: skip
PINNED = {"train.warmup_steps": "50", "train.ema_decay": "0.995"}
SHORT = {"train.lr": "lr", "train.warmup_steps": "wu", "train.ema_decay": "ema", "train.weight_decay": "wd",
         "train.lr_schedule": "sched", "student.patch_size": "p", "student.depth": "d",
         "student.hidden_size": "w", "student.num_heads": "h", "method.target": "tgt",
         "method.weighting": "wt", "method.snr_gamma": "g", "student.ls_init_value": "ls",
         "student.kernel_size": "k", "student.widths": "widths"}  # fmt: skip


def point_name(teacher: str, student: str, values: dict[str, str]) -> str:
    parts = [teacher, student]
    for key, value in values.items():
        short = SHORT.get(key, key.split(".")[-1])
        parts.append(f"{short}{value.strip(chr(34))}")
    return "-".join(parts).replace("/", "_")


def distill_args(teacher: str, student: str, values: dict[str, str], *, pinned: bool) -> list[str]:
    settings = {**(PINNED if pinned else {}), **values}
    args = ["--teacher", f"digits-{teacher}", "--student", student, "--preset", "small", *DKDM]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


def train(name: str, args: list[str], seed: int, steps: int, eval_every: int) -> list[str]:
    """Train one point (skipped when its run finished); returns the command."""
    out = OUT / f"{name}-s{seed}"
    cmd = ["dkdm-zoo", "distill", *args, "--steps", str(steps), "--batch-size", str(BATCH),
           "--set", f"train.seed={seed}", "--set", f"train.checkpoint_every={eval_every}",
           "--set", "train.checkpoints_keep=1000", "--set", "train.preview_every=0",
           "--set", f"train.log_every={min(eval_every, 50)}", "--out", str(out.relative_to(REPO)),
           "--quiet"]  # fmt: skip
    if (out / "student" / "config.json").is_file():
        return cmd
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"{name}-s{seed}.log").open("w") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        subprocess.run([*cmd, "--overwrite"] if out.exists() else cmd, check=True, stdout=log,
                       stderr=subprocess.STDOUT, env=env, cwd=REPO)  # fmt: skip
    return cmd


def train_wall(out: Path) -> dict[int, float]:
    """Cumulative training seconds at each logged step (from the logged samples/s)."""
    from dkdm_zoo.runs import Run

    per_step = {r["step"]: r for r in Run(out).read_metrics() if "loss" in r}
    wall, clock, last = {}, 0.0, 0
    for step in sorted(per_step):
        clock += (step - last) * BATCH / per_step[step]["samples_per_s"]
        wall[step], last = clock, step
    return wall


def evaluate_curve(teacher: str, name: str, seed: int) -> list[dict[str, Any]]:
    """Score every checkpoint's EMA student against the data and the teacher's DDIM-50 samples."""
    import torch
    from safetensors.torch import load_file

    from dkdm_zoo.engine import checkpoint as ckpt
    from dkdm_zoo.evaluation.metrics import evaluate
    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.sampling.settings import SamplingSettings

    torch.set_num_threads(1)
    registry = build_registry()
    out = OUT / f"{name}-s{seed}"
    reference, _ = teacher_reference(teacher, seed, registry)
    source = load_source(str(out), registry, device="cpu")
    student = source.teacher.student  # a multi-step run samples its student through the `run` teacher
    labels = "all" if source.spec.conditioning == "class" else None
    wall = train_wall(out)
    names = [n for n, _ in student.named_parameters()]
    curve = []
    for step, folder in ckpt.list_checkpoints(out / "checkpoints"):
        if step == 0:
            continue
        state = load_file(str(folder / "student.safetensors"))
        shadow = load_file(str(folder / "ema.safetensors"))
        state.update({n: shadow[n] for n in names})
        student.load_state_dict(state)
        images, used, info = timed_generate(
            source, EVAL_N, SamplingSettings(steps=50, seed=seed), labels=labels, progress=False
        )
        point = {"step": step, "train_s": wall.get(step), "sample_s_per_image": info["s_per_image"]}
        point.update(evaluate(images, "data", labels=used))
        point["fd_teacher"] = evaluate(images, reference)["fd"]
        point.pop("per_class_accuracy", None)
        curve.append(point)
        acc = f", acc {point['accuracy']:.3f}" if "accuracy" in point else ""
        print(f"{name} s{seed} step {step}: FD {point['fd']:.2f} (vs teacher {point['fd_teacher']:.2f}{acc})",
              flush=True)  # fmt: skip
    return curve


def parse_assignments(items: list[str], *, grid: bool) -> dict[str, list[str]]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"expected section.key=value{'s' if grid else ''}, got {item!r}")
        out[key.strip()] = value.split(",") if grid else [value]
    return out


def finished_runs() -> list[dict[str, Any]]:
    """Every finished point's JSON (curve and command)."""
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*-s*.json"))]
    return [r for r in rows if r.get("curve")]


def table() -> str:
    """One row per run: the FD curve, the end point's metrics, wall time; grouped by teacher and student."""
    rows = finished_runs()
    rows.sort(key=lambda r: (TEACHERS.index(r["teacher"]), STUDENTS.index(r["student"]), r["steps"], r["name"],
                             r["seed"]))  # fmt: skip
    lines = []
    group = None
    for r in rows:
        if (r["teacher"], r["student"]) != group:
            group = (r["teacher"], r["student"])
            lines += ["", f"#### digits-{r['teacher']} -> {r['student']}", "",
                      "| point | seed | steps | FD vs data along the curve | FD vs teacher (end) | precision | recall "
                      "| accuracy | train s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        curve = r["curve"]
        end = curve[-1]
        fds = " / ".join(f"{c['fd']:.1f}" for c in curve)
        acc = f"{end['accuracy']:.3f}" if "accuracy" in end else "-"
        settings = ", ".join(f"{k}={v}" for k, v in r["values"].items()) or "(defaults)"
        lines.append(f"| {settings} | {r['seed']} | {end['step']} | {fds} | {end['fd_teacher']:.2f} | "
                     f"{end['precision']:.3f} | {end['recall']:.3f} | {acc} | {end['train_s']:.0f} |")  # fmt: skip
    steps = sorted({c["step"] for r in rows for c in r["curve"]})
    head = (
        "# DKDM learning curves per architecture (tools/arch_sweep.py)\n\n"
        f"FD vs data of the EMA student at each checkpoint (steps {', '.join(map(str, steps))}; batch {BATCH}), "
        f"{EVAL_N} samples, 50-step DDIM; pinned unless the point says otherwise: "
        f"{', '.join(f'{k}={v}' for k, v in PINNED.items())}, DKDM rho 0.05 with a 4-step DDIM pool init, "
        "preset small. Every run's exact command is in its JSON under runs/arch-sweep/ (kept in "
        "docs/results/arch-sweep.json). DiT points that do not name `student.overlap` ran before that option "
        "existed, with plain (non-overlapping) patches; `overlap=1` is the tiny/small default since.\n"
    )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("--teacher", choices=TEACHERS, nargs="+", default=["ddpm"])
    parser.add_argument("--student", choices=STUDENTS, nargs="+", default=["unet"])
    parser.add_argument(
        "--grid", action="append", default=[], help="KEY=V1,V2,... (a --set key and its values)"
    )
    parser.add_argument("--set", dest="fixed", action="append", default=[], help="KEY=V for every point")
    parser.add_argument("--defaults", action="store_true", help="do not pin warmup and EMA decay")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    if args.what == "table":
        rows = finished_runs()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "arch-sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
        text = table()
        (RESULTS / "arch-sweep.md").write_text(text)
        print(text)
        return
    grid = parse_assignments(args.grid, grid=True)
    fixed = {k: v[0] for k, v in parse_assignments(args.fixed, grid=False).items()}
    for teacher, student in itertools.product(args.teacher, args.student):
        for combo in itertools.product(*grid.values()):
            values = {**fixed, **dict(zip(grid, combo, strict=True))}
            name = point_name(teacher, student, values)
            if args.steps != 300:
                name += f"-{args.steps}"
            for seed in args.seeds:
                path = OUT / f"{name}-s{seed}.json"
                if path.is_file():
                    continue
                start = time.perf_counter()
                cmd = train(name, distill_args(teacher, student, values, pinned=not args.defaults), seed,
                            args.steps, args.eval_every)  # fmt: skip
                result = {
                    "name": name, "teacher": teacher, "student": student, "values": values, "seed": seed,
                    "steps": args.steps, "command": shlex.join(cmd),
                    "python": shlex.join([Path(sys.executable).name, *sys.argv]),
                    "curve": evaluate_curve(teacher, name, seed),
                }  # fmt: skip
                result["total_s"] = time.perf_counter() - start
                path.with_suffix(".tmp").write_text(json.dumps(result, indent=2) + "\n")
                path.with_suffix(".tmp").replace(path)


if __name__ == "__main__":
    main()
