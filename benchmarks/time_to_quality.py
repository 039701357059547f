"""Time to quality on the digits benchmark: DKDM vs the synthetic-dataset baseline.

Both distil the shipped reference teacher `digits-ddpm` into the same `unet` student (same seed,
batch, lr, EMA) through ``dkdm_zoo.engine.train``, checkpointing every ``--eval-every`` steps. Wall
time runs from the call of ``train`` (so DKDM's pool initialisation and the baseline's dataset
generation count) to the start of the step after each checkpoint (read from a timing hook on
``method.loss``; the checkpoint writes, a few ms at this size, are included). Afterwards, offline, every checkpoint's EMA
student draws ``--samples`` samples with ``--sample-steps`` DDIM steps, scored by
``dkdm_zoo.evaluation.evaluate(samples, reference="data")`` (Frechet distance in the shipped digit
classifier's feature space). The target is the baseline's final FD; the result is each method's
wall time to first reach it, and the curve FD vs wall time (PNG; needs matplotlib, a
benchmark-only dependency: pip install matplotlib). The two runs are sequential (not interleaved).

Run: python -m benchmarks.time_to_quality      (after the teacher `digits-ddpm` is registered)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, write_result

TEACHER = "digits-ddpm"


def load_teacher(registry: Any) -> Any:
    from dkdm_zoo.errors import UnknownNameError, UserError

    try:
        return registry.create("teachers", TEACHER)
    except UnknownNameError:
        raise UserError(
            f"teacher '{TEACHER}' is not registered yet: it ships with dkdm_zoo/assets/{TEACHER}/; rerun once it exists"
        ) from None


def ema_student(student: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """The checkpoint's EMA weights in a copy of ``student`` (raw weights if the run has no EMA)."""
    import copy

    from safetensors.torch import load_file

    from dkdm_zoo.engine import checkpoint as ckpt

    model = copy.deepcopy(student)
    if (checkpoint / "ema.json").exists():
        state = ckpt.load_mixed(checkpoint, "ema")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name])
    else:
        model.load_state_dict(load_file(str(checkpoint / "student.safetensors")))
    return model.eval()


def run(
    label: str, method_name: str, method_options: dict[str, Any], args: argparse.Namespace, registry: Any
):
    from dkdm_zoo.config import build as builder
    from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
    from dkdm_zoo.engine import train
    from dkdm_zoo.evaluation import evaluate
    from dkdm_zoo.runs import Run

    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        ema_decay=args.ema,
        checkpoint_every=args.eval_every,
        checkpoints_keep=args.steps // args.eval_every + 1,
        preview_every=0,
        log_every=50,
        seed=0,
    )
    recipe = Recipe(
        f"ttq-{label}",
        Component(TEACHER),
        Component("unet", {"preset": args.preset}),
        Component(method_name, method_options),
        train=cfg,
    )
    built = builder.build(recipe, registry)
    stamps: list[float] = []
    loss = built.method.loss

    def timed_loss(*a: Any, **k: Any):
        stamps.append(time.perf_counter())
        return loss(*a, **k)

    built.method.loss = timed_loss
    curve = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(recipe, built.teacher, built.student, built.method, Run(tmp), quiet=True)
        end = time.perf_counter()
        stamps.append(end)
        forwards = built.method.teacher_forwards
        for step in range(args.eval_every, args.steps + 1, args.eval_every):
            model = ema_student(built.student, Path(tmp) / "checkpoints" / f"checkpoint-{step:07d}")
            samples = built.method.sample(
                model, args.samples, steps=args.sample_steps, generator=torch.Generator().manual_seed(1)
            )
            fd = evaluate(samples.float().cpu(), reference="data")["fd"]
            curve.append({"step": step, "wall_s": stamps[step] - start, "fd": fd})
            print(
                f"  {label:<10} step {step:>6}  wall {stamps[step] - start:>8.1f} s  FD {fd:.3f}", flush=True
            )
    return {
        "method": label,
        "options": method_options,
        "teacher_forwards": forwards,
        "setup_s": stamps[0] - start,
        "total_s": end - start,
        "curve": curve,
    }


def time_to(curve: list[dict[str, float]], target: float) -> float | None:
    for point in curve:
        if point["fd"] <= target:
            return point["wall_s"]
    return None


def plot(results: list[dict[str, Any]], target: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot")
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.plot(
            [p["wall_s"] for p in r["curve"]], [p["fd"] for p in r["curve"]], marker="o", label=r["method"]
        )
    ax.axhline(target, color="gray", linestyle="--", label="target (synthetic final FD)")
    ax.set_xlabel("wall time (s), including pool init / dataset generation")
    ax.set_ylabel("FD vs real digits (classifier features)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("digits: time to quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--rho", type=float, default=0.4)
    parser.add_argument("--pool-init", default="ddim", choices=["ancestral", "ddim"])
    parser.add_argument("--synthetic-samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dkdm_zoo.registry import build_registry

    registry = build_registry()
    load_teacher(registry)
    results = [
        run("synthetic", "synthetic", {"num_samples": args.synthetic_samples}, args, registry),
        run("dkdm", "dkdm", {"rho": args.rho, "pool_init": args.pool_init}, args, registry),
    ]
    target = results[0]["curve"][-1]["fd"]
    rows = {r["method"]: time_to(r["curve"], target) for r in results}
    png = RESULTS_DIR / "time_to_quality.png"
    plotted = plot(results, target, png)
    print(f"target FD {target:.3f} (synthetic baseline after {args.steps} steps)")
    for r in results:
        t = rows[r["method"]]
        print(
            f"{r['method']:<10} setup {r['setup_s']:>7.1f} s  total {r['total_s']:>7.1f} s  teacher forwards "
            f"{r['teacher_forwards']:>10,}  time to target {'not reached' if t is None else f'{t:.1f} s'}"
        )
    ratio = None if None in rows.values() else rows["dkdm"] / rows["synthetic"]
    path = write_result(
        "time_to_quality",
        {
            "settings": vars(args),
            "target_fd": target,
            "time_to_target_s": rows,
            "ratio_dkdm_over_synthetic": ratio,
            "plot": png.name if plotted else None,
            "runs": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
