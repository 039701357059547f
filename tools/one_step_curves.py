"""Learning curves of the one-step methods (BOOT, SiD, Diff-Instruct) on the digits teachers.

Each setting trains with `dkdm-zoo distill` (the real CLI and engine), keeping a checkpoint every
`--eval-every` steps. Afterwards every checkpoint's EMA generator draws 500 one-step samples from
fixed noise (balanced labels for the class-conditional teacher), scored in the shipped digit
classifier's feature space against the 1797 real digits (FD, precision, recall, class accuracy)
and against 500 samples of the teacher's 50-step DDIM (FD vs teacher). Each curve point also has
the step's teacher forwards and wall time (from metrics.jsonl), so methods can be compared at equal
steps, equal teacher forwards and equal wall time.

    python tools/one_step_curves.py run sid-ddpm --seeds 0 1 --steps 1200 --eval-every 200
    python tools/one_step_curves.py table            # JSON -> docs/results/one-step-curves.md
    python tools/one_step_curves.py table sid-ddpm@k2 sid-ddpm@k4 --out few-step.md   # only these settings
    python tools/one_step_curves.py figure boot-ddpm sid-ddpm di-ddpm --teacher digits-ddpm   # same-noise PNG

Runs: runs/one-step/<setting>-s<seed>/; curves: runs/one-step/<setting>-s<seed>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "runs" / "one-step"
RESULTS = REPO / "docs" / "results"
EVAL_N = 500

# digits-ddpm's own architecture as a `unet` student: the generator starts as the teacher.
TEACHER_ARCH = ["--student", "unet", "--preset", "small", "--set", "student.block_out_channels=[32,64,64]",
                "--set", "student.layers_per_block=1", "--set", "student.attention_resolutions=[4]",
                "--set", "student.min_resolution=2", "--set", "student.dropout=0.0"]  # fmt: skip
EMA = ["--set", "train.ema_decay=0.995"]

# name -> distill arguments (teacher, student, method and settings); budget, seed and output are added.
SETTINGS: dict[str, list[str]] = {
    "boot-ddpm": ["--teacher", "digits-ddpm", *TEACHER_ARCH, "--method", "boot", "--set", "train.lr=2e-3", *EMA],
    "sid-ddpm": ["--teacher", "digits-ddpm", *TEACHER_ARCH, "--method", "sid", "--set", "train.lr=1e-4", *EMA],
    "di-ddpm": ["--teacher", "digits-ddpm", *TEACHER_ARCH, "--method", "diff-instruct", "--set", "train.lr=1e-4",
                *EMA],
    "boot-dit": ["--teacher", "digits-dit", "--student", "dit", "--preset", "small", "--method", "boot",
                 "--set", "train.lr=1e-3", "--set", "train.warmup_steps=50", *EMA],
    "sid-dit": ["--teacher", "digits-dit", "--student", "dit", "--preset", "small", "--method", "sid",
                "--set", "train.lr=1e-4", *EMA],
    # the generator and fake score start as the teacher's own UNet (--student teacher; a LoRA of it with
    # `sid-ddpm-teacher@loraR --set student.lora_rank=R`)
    "sid-ddpm-teacher": ["--teacher", "digits-ddpm", "--student", "teacher", "--method", "sid",
                         "--set", "train.lr=1e-4", *EMA],
    # the generator and fake score start as the teacher's own DiT (--student teacher)
    "sid-dit-teacher": ["--teacher", "digits-dit", "--student", "teacher", "--method", "sid",
                        "--set", "train.lr=1e-4", *EMA],
    # the rectified-flow teacher: generator and fake score from its own UNet (the digits-flow-sid recipe)
    "sid-flow-teacher": ["--teacher", "digits-flow", "--student", "teacher", "--method", "sid",
                         "--set", "train.lr=1e-4", *EMA],
    # the digits-ddpm-diff-instruct / digits-ddpm-boot recipes: generator (and fake score) from the teacher's UNet
    "di-ddpm-teacher": ["--teacher", "digits-ddpm", "--student", "teacher", "--method", "diff-instruct",
                        "--set", "train.lr=3e-5", *EMA],
    "boot-ddpm-teacher": ["--teacher", "digits-ddpm", "--student", "teacher", "--method", "boot",
                          "--set", "train.lr=2e-3", *EMA],
    "di-dit": ["--teacher", "digits-dit", "--student", "dit", "--preset", "small", "--method", "diff-instruct",
               "--set", "train.lr=1e-4", *EMA],
}  # fmt: skip


def run_dir(name: str, seed: int) -> Path:
    return OUT / f"{name}-s{seed}"


def variant(name: str) -> str:
    """A setting name with an optional @tag (the same setting with extra --set values)."""
    return name.partition("@")[0]


def train(name: str, seed: int, steps: int, eval_every: int, extra: list[str]) -> list[str]:
    """Train one setting (skipped when its run finished); returns the command."""
    out = run_dir(name, seed)
    cmd = ["dkdm-zoo", "distill", *SETTINGS[variant(name)], *extra, "--steps", str(steps), "--batch-size", "64",
           "--set", f"train.seed={seed}", "--set", f"train.checkpoint_every={eval_every}",
           "--set", "train.checkpoints_keep=1000", "--set", "train.preview_every=0",
           "--set", f"train.log_every={min(eval_every, 50)}", "--out", str(out), "--quiet"]  # fmt: skip
    if (out / "student" / "config.json").is_file():
        return cmd
    if (out / "checkpoints" / "latest").exists():
        cmd.append("--resume")  # a run killed part-way goes on from its last checkpoint
    elif out.exists():
        cmd.append("--overwrite")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"{name}-s{seed}.log").open("w") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return [c for c in cmd if c not in ("--overwrite", "--resume")]


def evaluate_curve(name: str, seed: int) -> dict[str, Any]:
    """Score every checkpoint's EMA generator against the data and the teacher's DDIM-50."""
    import torch
    from safetensors.torch import load_file

    from dkdm_zoo.engine import checkpoint as ckpt
    from dkdm_zoo.evaluation.metrics import evaluate
    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.runs import Run
    from dkdm_zoo.sampling.settings import SamplingSettings

    torch.set_num_threads(2)
    registry = build_registry()
    out = run_dir(name, seed)
    source = load_source(str(out), registry, device="cpu")
    labels = "all" if source.spec.conditioning == "class" else None
    teacher = source.teacher_source(registry)
    reference, _, _ = timed_generate(
        teacher, EVAL_N, SamplingSettings(steps=50, seed=seed), labels=labels, progress=False
    )
    metrics = Run(out).read_metrics()
    per_step = {r["step"]: r for r in metrics if "loss" in r}
    wall, clock = {}, 0.0  # cumulative training seconds at each logged step, from samples/s
    last = 0
    for step in sorted(per_step):
        clock += (step - last) * 64 / per_step[step]["samples_per_s"]
        wall[step], last = clock, step
    parameters = [n for n, _ in source.generator.named_parameters()]
    curve = []
    for step, folder in ckpt.list_checkpoints(out / "checkpoints"):
        state = load_file(str(folder / "student.safetensors"))
        shadow = load_file(str(folder / "ema.safetensors"))
        # the EMA of every saved parameter (a LoRA generator saves and averages its adapters only)
        state.update({n: shadow[n] for n in parameters if n in state})
        source.generator.load_state_dict(state)
        images, used, info = timed_generate(
            source, EVAL_N, SamplingSettings(seed=seed), labels=labels, progress=False
        )
        point = {
            "step": step,
            "wall_s": wall.get(step),
            "teacher_forwards": per_step.get(step, {}).get("teacher_forwards"),
        }
        point.update(evaluate(images, "data", labels=used))
        point["fd_teacher"] = evaluate(images, reference)["fd"]
        point.pop("per_class_accuracy", None)
        curve.append(point)
        print(
            f"{name} s{seed} step {step}: FD {point['fd']:.2f} (vs teacher {point['fd_teacher']:.2f})",
            flush=True,
        )
    return {"setting": name, "seed": seed, "curve": curve}


def figure(teacher: str, names: list[str], seed: int = 0, n: int = 16) -> Path:
    """One picture: the teacher's DDIM at 1, 4, 10 and 50 steps, then each setting's final generator
    (seed-``seed`` run), all from the SAME starting noise and classes, so rows compare image by image."""
    import torch

    from dkdm_zoo.generation.images import save_grid
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.sampling.settings import SamplingSettings

    registry = build_registry()
    source = load_source(teacher, registry)
    labels = [i % 10 for i in range(n)] if source.spec.conditioning == "class" else None
    rows = [
        source.generate(n, SamplingSettings(steps=k, seed=seed), labels=labels, progress=False)[0]
        for k in (1, 4, 10, 50)
    ]
    for name in names:
        run = load_source(str(run_dir(name, seed)), registry)
        rows.append(run.generate(n, SamplingSettings(seed=seed), labels=labels, progress=False)[0])
    grid = torch.nn.functional.interpolate(torch.cat(rows), scale_factor=4, mode="nearest")  # 8x8 is tiny
    return save_grid(grid, RESULTS / f"one-step-{teacher}.png", nrow=n)


def summary(rows: list[dict[str, Any]]) -> str:
    """One line per setting and budget, over its seeds: the end point, and the mean of the curve's
    second half (one-step curves oscillate by 1-2 FD between checkpoints; the end alone is noisy)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["curve"][-1]["step"]), []).append(r)
    lines = [
        "| setting | steps | seeds | FD vs data, end (per seed) | FD vs data, 2nd-half mean | FD vs teacher DDIM-50, end | recall, end | accuracy, end | teacher forwards | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    for (setting, steps), runs in sorted(groups.items()):
        ends = [r["curve"][-1] for r in runs]
        halves = [mean([c["fd"] for c in r["curve"][len(r["curve"]) // 2 :]]) for r in runs]
        per_seed = ", ".join(f"{e['fd']:.1f}" for e in ends)
        acc = f"{mean([e['accuracy'] for e in ends]):.3f}" if "accuracy" in ends[0] else "-"
        lines.append(
            f"| {setting} | {steps} | {', '.join(str(r['seed']) for r in runs)} | {mean([e['fd'] for e in ends]):.2f} "
            f"({per_seed}) | {mean(halves):.2f} | {mean([e['fd_teacher'] for e in ends]):.2f} | "
            f"{mean([e['recall'] for e in ends]):.3f} | {acc} | {ends[0]['teacher_forwards']:,} | "
            f"{mean([e['wall_s'] for e in ends]):.0f} |"
        )
    return "\n".join(lines) + "\n"


def table(names: list[str]) -> str:
    """Every finished run's curve (only the settings in ``names`` when given)."""
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*-s*.json"))]
    rows = [r for r in rows if not names or r["setting"] in names]
    head = "## Over seeds\n\n" + summary(rows) + "\n## Every run\n\n"
    lines = [
        "| setting | seed | steps | FD vs data along the curve | FD vs teacher DDIM-50 (end) | precision | recall | accuracy | teacher forwards | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        curve = r["curve"]
        end = curve[-1]
        fds = " / ".join(f"{c['fd']:.1f}" for c in curve)
        acc = f"{end['accuracy']:.3f}" if "accuracy" in end else "-"
        lines.append(
            f"| {r['setting']} | {r['seed']} | {end['step']} | {fds} | {end['fd_teacher']:.2f} | "
            f"{end['precision']:.3f} | {end['recall']:.3f} | {acc} | {end['teacher_forwards']:,} | "
            f"{end['wall_s']:.0f} |"
        )
    commands = sorted({r["command"] for r in rows if "command" in r})
    return head + "\n".join(lines) + "\n\nCommands:\n\n" + "\n".join(f"    {c}" for c in commands) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["run", "table", "figure"])
    parser.add_argument(
        "--teacher", default="digits-ddpm", help="figure: the teacher (rows: its DDIM 1/4/10/50)"
    )
    parser.add_argument(
        "names", nargs="*", help="settings; NAME@TAG runs NAME with --set extras as its own run"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--out", default="one-step-curves.md", help="table: file name under docs/results/")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for distill")
    args = parser.parse_args()
    if args.what == "figure":
        print(f"wrote {figure(args.teacher, args.names, seed=args.seeds[0])}")
        return
    if args.what == "table":
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = table(args.names)
        (RESULTS / args.out).write_text(text)
        print(text)
        return
    unknown = sorted({variant(n) for n in args.names} - set(SETTINGS))
    if unknown or not args.names:
        parser.error(f"settings to run: {', '.join(SETTINGS)} (unknown: {unknown})")
    extra = [a for item in args.extra for a in ("--set", item)]
    for name in args.names:
        for seed in args.seeds:
            start = time.perf_counter()
            cmd = train(name, seed, args.steps, args.eval_every, extra)
            result = evaluate_curve(name, seed)
            result["command"] = shlex.join(cmd)
            result["python"] = shlex.join([Path(sys.executable).name, *sys.argv])
            result["total_s"] = time.perf_counter() - start
            path = OUT / f"{name}-s{seed}.json"
            path.with_suffix(".tmp").write_text(json.dumps(result, indent=2) + "\n")
            path.with_suffix(".tmp").replace(path)


if __name__ == "__main__":
    main()
