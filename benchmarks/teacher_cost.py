"""Data-free cost accounting: teacher forwards per student training sample, pool initialisation included.

(a) Computed at the paper's CIFAR-10 settings (batch b = 128, rho = 0.4, T = 1000, S = 200K steps):

    DKDM pool N = round(rho * T) * b slots; ancestral init = N * (T - 2) / 2 forwards in expectation
    (each slot's stop index is uniform in 1..T-1 and costs T-1-stop forwards); ddim init = N * K
    forwards (K = method.pool_init_steps; slots with fewer than K steps to go use fewer);
    training = S * b (one forward per training sample).
    per training sample = (init + S * b) / (S * b)
    Synthetic baseline: M samples x T ancestral steps = M * T forwards, once; training uses none.
    Assumption: M = 50,000 (the size of CIFAR-10, as the paper's "teacher-generated dataset").

The counts come from the methods' own ``plan()`` and are checked against the closed forms above; the
wall time uses a measured per-sample forward time of the CIFAR-sized teacher (35.7M UNet2DModel,
google/ddpm-cifar10-32's configuration, random weights) on this machine.

(b) Measured on the digits-sized teacher (1x8x8) by running short DKDM / synthetic runs through the
engine and reading ``teacher_forwards`` / ``teacher_calls`` from metrics.jsonl.

Run: python -m benchmarks.teacher_cost
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import setups
from benchmarks.common import write_result

GOAL = 1.1
PAPER = {"batch": 128, "rho": 0.4, "T": 1000, "steps": 200_000, "synthetic_samples": 50_000}


def closed_form(init: str, ddim_steps: int, batch: int, rho: float, T: int, steps: int) -> dict[str, float]:
    slots = round(rho * T) * batch
    per_slot = (T - 2) / 2 if init == "ancestral" else min(ddim_steps, (T - 2) / 2)
    init_f = slots * per_slot
    train_f = steps * batch
    return {"pool_slots": slots, "init_forwards": init_f, "train_forwards": train_f}


def forward_time(batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per teacher forward (one sample) of the CIFAR-sized teacher at ``batch``."""
    teacher = setups.teacher("cifar")
    x = torch.randn(batch, 3, 32, 32)
    t = torch.randint(0, 1000, (batch,))
    teacher.predict(x, t)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        teacher.predict(x, t)
        times.append(time.perf_counter() - start)
    return {
        "batch": batch,
        "call_s_median": statistics.median(times),
        "per_sample_s": statistics.median(times) / batch,
    }


def paper_accounting(ddim_steps: int, per_sample_s: float) -> list[dict[str, Any]]:
    from dkdm_zoo.methods.dkdm import DKDM
    from dkdm_zoo.methods.synthetic import Synthetic

    p = PAPER
    teacher = setups.teacher("cifar")
    spec = teacher.spec
    student = setups.student(spec, "tiny")  # plan() does not depend on the student
    training_samples = p["steps"] * p["batch"]
    rows = []
    for init in ("ancestral", "ddim"):
        method = DKDM(teacher, student, rho=p["rho"], pool_init=init, pool_init_steps=ddim_steps)
        plan = method.plan(p["batch"], p["steps"])
        ref = closed_form(init, ddim_steps, p["batch"], p["rho"], spec.num_train_timesteps, p["steps"])
        assert (
            plan["pool_slots"] == ref["pool_slots"] and abs(plan["init_forwards"] - ref["init_forwards"]) <= 1
        )
        rows.append(
            _row(
                f"dkdm ({init} init{f', K={ddim_steps}' if init == 'ddim' else ''})",
                plan,
                training_samples,
                per_sample_s,
            )
        )
    synth = Synthetic(
        teacher, student, num_samples=p["synthetic_samples"], sampler="ddpm", sampler_steps=1000
    )
    plan = synth.plan(p["batch"], p["steps"])
    assert plan["init_forwards"] == p["synthetic_samples"] * spec.num_train_timesteps
    rows.append(
        _row(f"synthetic ({p['synthetic_samples']:,} x 1000 ancestral)", plan, training_samples, per_sample_s)
    )
    return rows


def _row(label: str, plan: dict[str, Any], training_samples: int, per_sample_s: float) -> dict[str, Any]:
    init, train = int(plan["init_forwards"]), int(plan["train_forwards"])
    return {
        "method": label,
        "init_forwards": init,
        "train_forwards": train,
        "training_samples": training_samples,
        "forwards_per_training_sample": (init + train) / training_samples,
        "init_share": init / max(init + train, 1),
        "teacher_cpu_hours_this_machine": (init + train) * per_sample_s / 3600,
    }


def measured_runs(
    batch: int, rho: float, steps: int, ddim_steps: int, synth_samples: int
) -> list[dict[str, Any]]:
    """Short runs through the engine on the digits-sized teacher; counts read from metrics.jsonl."""
    from dkdm_zoo.engine import train
    from dkdm_zoo.methods.dkdm import DKDM
    from dkdm_zoo.methods.synthetic import Synthetic
    from dkdm_zoo.recipes import Component, Recipe, TrainConfig
    from dkdm_zoo.run import Run

    teacher = setups.teacher("digits")
    T = teacher.spec.num_train_timesteps
    cfg = TrainConfig(
        steps=steps, batch_size=batch, checkpoint_every=0, preview_every=0, log_every=steps, ema_decay=0
    )
    rows = []
    methods = {
        "dkdm (ancestral init)": lambda s: DKDM(teacher, s, rho=rho, pool_init_batch=round(rho * T) * batch),
        f"dkdm (ddim init, K={ddim_steps})": lambda s: DKDM(
            teacher,
            s,
            rho=rho,
            pool_init="ddim",
            pool_init_steps=ddim_steps,
            pool_init_batch=round(rho * T) * batch,
        ),
        f"synthetic ({synth_samples} x 1000 ancestral)": lambda s: Synthetic(
            teacher, s, num_samples=synth_samples, sample_batch=synth_samples
        ),
    }
    for label, make in methods.items():
        student = setups.student(teacher.spec, "tiny")
        method = make(student)
        recipe = Recipe("cost", Component("ddpm-unet"), Component("unet", {"preset": "tiny"}), train=cfg)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train(recipe, teacher, student, method, Path(out), quiet=True)
            records = Run(out).read_metrics()
        wall = time.perf_counter() - start
        last = [r for r in records if "teacher_calls" in r][-1]
        end = records[-1]
        init = int(method.init_forwards if isinstance(method, DKDM) else method.teacher_forwards)
        plan = method.plan(batch, steps)
        total = int(end["teacher_forwards"])
        rows.append(
            {
                "method": label,
                "batch": batch,
                "rho": rho,
                "steps": steps,
                "teacher_forwards": total,
                "teacher_calls": int(last["teacher_calls"]),
                "init_forwards": init,
                "train_forwards": total - init,
                "planned_init_forwards": int(plan["init_forwards"]),
                "forwards_per_training_sample": total / (steps * batch),
                "wall_s": wall,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ddim-steps", type=int, default=10, help="method.pool_init_steps for the ddim init")
    parser.add_argument("--forward-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="digits runs: batch")
    parser.add_argument("--rho", type=float, default=0.05, help="digits runs: rho (small, so init finishes)")
    parser.add_argument("--steps", type=int, default=200, help="digits runs: optimiser steps")
    parser.add_argument("--synthetic-samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    fwd = forward_time(args.forward_batch, args.repeats)
    paper = paper_accounting(args.ddim_steps, fwd["per_sample_s"])
    print(
        f"(a) paper CIFAR-10 settings {PAPER}; CIFAR-sized teacher forward: {fwd['per_sample_s'] * 1e3:.1f} ms/sample "
        f"(batch {fwd['batch']}, {torch.get_num_threads()} thread(s))"
    )
    print(
        f"{'method':<36} {'init fwd':>12} {'train fwd':>12} {'fwd/sample':>10} {'init %':>7} {'CPU h here':>10}"
    )
    for r in paper:
        print(
            f"{r['method']:<36} {r['init_forwards']:>12,} {r['train_forwards']:>12,} "
            f"{r['forwards_per_training_sample']:>10.3f} {100 * r['init_share']:>6.1f}% {r['teacher_cpu_hours_this_machine']:>10,.0f}"
        )
    measured = measured_runs(args.batch, args.rho, args.steps, args.ddim_steps, args.synthetic_samples)
    print(f"(b) measured, digits-sized teacher, batch {args.batch}, rho {args.rho}, {args.steps} steps")
    print(
        f"{'method':<36} {'forwards':>10} {'calls':>7} {'init':>9} {'planned init':>12} {'fwd/sample':>10} {'wall s':>7}"
    )
    for r in measured:
        print(
            f"{r['method']:<36} {r['teacher_forwards']:>10,} {r['teacher_calls']:>7,} {r['init_forwards']:>9,} "
            f"{r['planned_init_forwards']:>12,} {r['forwards_per_training_sample']:>10.2f} {r['wall_s']:>7.1f}"
        )
    path = write_result(
        "teacher_cost",
        {
            "goal_forwards_per_sample": GOAL,
            "paper_settings": PAPER,
            "forward_time": fwd,
            "paper": paper,
            "measured": measured,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
