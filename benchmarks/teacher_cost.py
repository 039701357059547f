"""Data-free cost accounting: teacher forwards per student training sample, pool initialisation included.

(a) Computed at the paper's CIFAR-10 settings (batch b = 128, rho = 0.4, T = 1000, S = 200K steps):

    DKDM pool N = round(rho * T) * b slots; ancestral init = N * (T - 2) / 2 forwards in expectation
    (each slot's stop index is uniform in 1..T-1 and costs T-1-stop forwards); ddim init = N * K
    forwards (K = method.pool_init_steps; slots with fewer than K steps to go use fewer);
    trajectory init: chains of the teacher's ancestral sampler each shared by S = (T-1)/K slots
    (snapshots at stratified stop indices): about K forwards a slot;
    training = S * b (one forward per training sample).
    per training sample = (init + S * b) / (S * b)
    Synthetic baseline: M samples x T ancestral steps = M * T forwards, once; training uses none.
    Assumption: M = 50,000 (the size of CIFAR-10, as the paper's "teacher-generated dataset").

(a') The same accounting at the shipped latent recipe's settings (sd-to-small-latent-unet: rho 4,
batch 48, 640K steps, 4x64x64 latents, guidance 7.5 so every forward counts twice).

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
from typing import Any

import torch

from benchmarks import setups
from benchmarks.common import write_result

GOAL = 1.1
PAPER = {"batch": 128, "rho": 0.4, "T": 1000, "steps": 200_000, "synthetic_samples": 50_000}
# The shipped sd-to-small-latent-unet recipe: rho 4, batch 48, 640K steps, guidance 7.5 (two forwards).
LATENT = {"batch": 48, "rho": 4.0, "T": 1000, "steps": 640_000}
INITS = [
    ("ancestral", 0),
    ("ddim", 1),
    ("ddim", 4),
    ("ddim", 10),
    ("ddim", 25),
    ("trajectory", 4),
    ("trajectory", 10),
]


def closed_form(init: str, k: int, batch: int, rho: float, T: int, steps: int) -> dict[str, float]:
    slots = round(rho * T) * batch
    if init == "ancestral":
        per_slot = (T - 2) / 2
    elif init == "ddim":
        per_slot = min(k, (T - 2) / 2)
    else:  # trajectory: chains of T-1 steps (to about their lowest stop) shared by S slots
        per_chain = max(1, min(T - 1, round((T - 1) / k)))
        per_slot = (T - 1 - 0.5 * (T - 1) / per_chain) / per_chain
    return {"pool_slots": slots, "init_forwards": slots * per_slot, "train_forwards": steps * batch}


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


def latent_teacher() -> Any:
    """Stable Diffusion's spec with no network: plans depend on the spec and the guidance only."""
    from dkdm_zoo.spec import TeacherSpec
    from dkdm_zoo.teachers.spec_only import SpecTeacher

    spec = TeacherSpec(
        sample_shape=(4, 64, 64),
        space="latent",
        conditioning="text",
        text_embed_dim=768,
        text_seq_len=77,
        schedule={"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    )
    return SpecTeacher(spec, guidance_scale=7.5)


def init_accounting(
    settings: dict[str, Any], teacher: Any, per_sample_s: float | None
) -> list[dict[str, Any]]:
    """Every pool initialisation at ``settings``, counted by DKDM's own plan() and checked in closed form."""
    from dkdm_zoo.methods.dkdm import DKDM

    p = settings
    cost = 2 if teacher.spec.conditioning != "none" and teacher.guidance_scale not in (None, 1.0) else 1
    rows = []
    for init, k in INITS:
        method = DKDM(teacher, torch.nn.Linear(1, 1), rho=p["rho"], pool_init=init, pool_init_steps=max(k, 1))
        plan = method.plan(p["batch"], p["steps"])
        ref = closed_form(init, max(k, 1), p["batch"], p["rho"], p["T"], p["steps"])
        assert plan.details["pool_slots"] == ref["pool_slots"]
        assert abs(plan.init_forwards - cost * ref["init_forwards"]) <= cost
        label = "dkdm, ancestral init (paper)" if init == "ancestral" else f"dkdm, {init} init K={k}"
        rows.append(
            _row(label, plan.init_forwards, plan.train_forwards, p["steps"] * p["batch"], per_sample_s)
        )
    return rows


def paper_accounting(per_sample_s: float) -> list[dict[str, Any]]:
    from dkdm_zoo.methods.synthetic import Synthetic

    p = PAPER
    teacher = setups.teacher("cifar")
    rows = init_accounting(p, teacher, per_sample_s)
    synth = Synthetic(teacher, setups.student(teacher.spec, "tiny"), num_samples=p["synthetic_samples"],
                      sampler="ddpm", sampler_steps=1000)  # fmt: skip
    plan = synth.plan(p["batch"], p["steps"])
    assert plan.init_forwards == p["synthetic_samples"] * teacher.spec.num_train_timesteps
    label = f"synthetic ({p['synthetic_samples']:,} x 1000 ancestral)"
    rows.append(_row(label, plan.init_forwards, plan.train_forwards, p["steps"] * p["batch"], per_sample_s))
    return rows


def _row(
    label: str, init: int, train: int, training_samples: int, per_sample_s: float | None
) -> dict[str, Any]:
    row = {
        "method": label,
        "init_forwards": int(init),
        "train_forwards": int(train),
        "training_samples": training_samples,
        "forwards_per_training_sample": (init + train) / training_samples,
        "init_share": init / max(init + train, 1),
    }
    if per_sample_s is not None:
        row["teacher_cpu_hours_this_machine"] = (init + train) * per_sample_s / 3600
    return row


def measured_runs(
    batch: int, rho: float, steps: int, ddim_steps: int, synth_samples: int
) -> list[dict[str, Any]]:
    """Short runs through the engine on the digits-sized teacher; counts read from metrics.jsonl."""
    from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
    from dkdm_zoo.engine import train
    from dkdm_zoo.methods.dkdm import DKDM
    from dkdm_zoo.methods.synthetic import Synthetic
    from dkdm_zoo.runs import Run

    teacher = setups.teacher("digits")
    T = teacher.spec.num_train_timesteps
    cfg = TrainConfig(
        steps=steps, batch_size=batch, checkpoint_every=0, preview_every=0, log_every=steps, ema_decay=0
    )
    rows = []
    methods = {
        f"dkdm ({init} init{'' if init == 'ancestral' else f', K={k}'})": (
            lambda s, init=init, k=k: DKDM(
                teacher,
                s,
                rho=rho,
                pool_init=init,
                pool_init_steps=max(k, 1),
                pool_init_batch=round(rho * T) * batch,
            )  # fmt: skip
        )
        for init, k in (("ancestral", 0), ("ddim", ddim_steps), ("trajectory", ddim_steps))
    }
    methods[f"synthetic ({synth_samples} x 1000 ancestral)"] = lambda s: Synthetic(
        teacher, s, num_samples=synth_samples, sample_batch=synth_samples
    )
    for label, make in methods.items():
        student = setups.student(teacher.spec, "tiny")
        method = make(student)
        recipe = Recipe("cost", Component("ddpm-unet"), Component("unet", {"preset": "tiny"}), train=cfg)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train(recipe, teacher, student, method, Run(out), quiet=True)
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
                "planned_init_forwards": int(plan.init_forwards),
                "forwards_per_training_sample": total / (steps * batch),
                "wall_s": wall,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ddim-steps", type=int, default=4, help="digits runs: method.pool_init_steps")
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
    paper = paper_accounting(fwd["per_sample_s"])
    latent = init_accounting(LATENT, latent_teacher(), None)
    header = f"{'method':<36} {'init fwd':>14} {'train fwd':>14} {'fwd/sample':>10} {'init %':>7}"
    for title, rows in (
        (f"(a) paper CIFAR-10 settings {PAPER}; CIFAR-sized teacher forward: {fwd['per_sample_s'] * 1e3:.1f} "
         f"ms/sample (batch {fwd['batch']}, {torch.get_num_threads()} thread(s))", paper),
        (f"(a') latent SD recipe settings {LATENT}, guidance 7.5 (two forwards a sample)", latent),
    ):  # fmt: skip
        print(title)
        print(header)
        for r in rows:
            print(
                f"{r['method']:<36} {r['init_forwards']:>14,} {r['train_forwards']:>14,} "
                f"{r['forwards_per_training_sample']:>10.3f} {100 * r['init_share']:>6.1f}%"
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
            "latent_settings": LATENT,
            "latent": latent,
            "measured": measured,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
