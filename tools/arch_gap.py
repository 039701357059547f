"""Where a DKDM student falls short of its teacher: the eps error against the teacher, per timestep.

For each run folder, the real digits (x0, with their labels for a class-conditional teacher) are
noised to x_t at a few timesteps with fixed noise, and the student's eps is compared with the
teacher's at the same x_t (MSE over pixels, mean over images; no guidance: the conditional
prediction itself). Runs of different architectures trained at the same budget then show whether
one lags everywhere (optimisation speed) or at some noise levels only (what its samples inherit:
large t sets the layout, small t the detail).

    python tools/arch_gap.py runs/results/ddpm/dkdm-unet-s0 runs/results/ddpm/dkdm-dit-s0 ...

Prints a markdown table (one row per run, one column per timestep, plus the train loss the run
logged last); `--json-out` keeps it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TIMESTEPS = (10, 50, 100, 250, 500, 750, 950)


def eps_gaps(runs: list[Path], n: int = 512, seed: int = 0) -> list[dict]:
    import torch

    from dkdm_zoo.datasets import load_digits_images
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.runs import Run
    from dkdm_zoo.teachers.base import Condition

    registry = build_registry()
    results = []
    teachers: dict[str, object] = {}
    digits: dict[int, tuple] = {}  # resolution -> (images, labels), read once
    for path in runs:
        run = Run(path)
        teacher_name = run.manifest.teacher
        if teacher_name not in teachers:
            teachers[teacher_name] = registry.create("teachers", teacher_name, **run.manifest.teacher_options)
        teacher = teachers[teacher_name]
        student = registry.create("teachers", "run", path=str(path))
        if teacher.spec.resolution not in digits:
            digits[teacher.spec.resolution] = load_digits_images(teacher.spec.resolution)
        images, labels = digits[teacher.spec.resolution]
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(images), generator=generator)[:n]
        x0, y = images[pick], labels[pick]
        cond = Condition(labels=y) if teacher.spec.conditioning == "class" else None
        acp = teacher.schedule.alphas_cumprod
        row = {"run": str(path), "student": run.manifest.student, "mse": {}}
        for t in TIMESTEPS:
            noise = torch.randn(x0.shape, generator=generator)
            a = acp[t].float()
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            tt = torch.full((len(x0),), t, dtype=torch.long)
            with torch.no_grad():
                want = teacher.predict(x_t, tt, cond, guidance_scale=1.0).eps
                got = student.predict(x_t, tt, cond, guidance_scale=1.0).eps
            row["mse"][t] = float((got - want).pow(2).mean())
        losses = [r["mse"] for r in run.read_metrics() if "mse" in r]
        row["train_mse_last"] = losses[-1] if losses else None
        results.append(row)
    return results


def markdown(rows: list[dict]) -> str:
    head = ["run", *[f"t={t}" for t in TIMESTEPS], "train MSE (last log)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [Path(r["run"]).name, *[f"{r['mse'][t]:.4f}" for t in TIMESTEPS]]
        cells.append("" if r["train_mse_last"] is None else f"{r['train_mse_last']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    rows = eps_gaps(args.runs, n=args.n, seed=args.seed)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
