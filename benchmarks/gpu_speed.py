"""GPU speed of the CIFAR-sized DKDM step: fp32 eager vs bf16 vs bf16 + torch.compile + channels_last.

Teacher: UNet2DModel with google/ddpm-cifar10-32's configuration (35.7M, random weights); student:
`unet` preset `base`; batch 128; DKDM through ``dkdm_zoo.engine.train`` with a prepared random pool
(EMA + grad clipping on, checkpoints/previews off). Modes are TrainConfig settings:

    fp32          mixed_precision="no",   teacher_dtype="float32"
    bf16          mixed_precision="bf16", teacher_dtype="bfloat16"
    bf16-compile  bf16 + compile=True + channels_last=True (the engine compiles the student);
                  ``--compile-teacher`` also compiles the teacher's UNet (channels_last too)

Timed as in engine_overhead.py (start of one ``method.loss`` call to the next, warm-up steps and
compilation dropped), with a CUDA synchronise in every step's timing hook; modes alternate inside
every repetition; samples/s from the median step. Peak memory: ``torch.cuda.max_memory_allocated``
per mode. FLOPs of one step (teacher forward + student forward and backward, fp32, batch as run)
with ``torch.utils.flop_counter.FlopCounterMode``; MFU = FLOPs/step / step time / the GPU's peak
dense bf16 FLOP/s (``dkdm_zoo.engine.budget.PEAK_BF16``, by device name: the dry run's table).

Run (CUDA machine): python -m benchmarks.gpu_speed
Smoke test on CPU:  python -m benchmarks.gpu_speed --batch 2 --steps 1 --warmup 1 --reps 1 --modes fp32 bf16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import setups
from benchmarks.common import write_result
from dkdm_zoo.engine.budget import peak_flops

MODES = {
    "fp32": {"mixed_precision": "no", "teacher_dtype": "float32"},
    "bf16": {"mixed_precision": "bf16", "teacher_dtype": "bfloat16"},
    "bf16-compile": {
        "mixed_precision": "bf16",
        "teacher_dtype": "bfloat16",
        "compile": True,
        "channels_last": True,
    },
}
GOALS = {"speedup_bf16_compile_over_fp32": 2.0, "mfu": 0.35}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_flops(teacher: Any, student: torch.nn.Module, batch: int, device: torch.device) -> int:
    """FLOPs of one DKDM step's networks: teacher forward + student forward + backward (fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, *teacher.spec.sample_shape, device=device)
    t = torch.randint(0, teacher.spec.num_train_timesteps, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            target = teacher.unet(x, t).sample
        F.mse_loss(student(x, t), target).backward()
    student.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class Bench:
    def __init__(self, batch: int, preset: str, compile_teacher: bool):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.batch, self.preset, self.compile_teacher = batch, preset, compile_teacher
        self.teacher = setups.teacher("cifar")
        self.student = setups.student(self.teacher.spec, preset)
        self.init_state = {k: v.clone() for k, v in self.student.state_dict().items()}
        self.pool = setups.random_pool(self.teacher.spec, round(0.4 * 1000) * batch)
        self.plain_unet = self.teacher.unet
        self.compiled_unet: Any = None

    def run(self, mode: str, steps: int, warmup: int) -> tuple[list[float], float]:
        from accelerate.state import AcceleratorState

        from dkdm_zoo.config.recipes import Component, Recipe, TrainConfig
        from dkdm_zoo.engine import train
        from dkdm_zoo.runs import Run

        # accelerate keeps one process-wide state: a new precision needs it cleared (single process only)
        AcceleratorState._reset_state()
        cfg = TrainConfig(
            steps=warmup + steps + 1,
            batch_size=self.batch,
            checkpoint_every=0,
            preview_every=0,
            log_every=10,
            **MODES[mode],
        )
        self.teacher.unet = self.plain_unet
        if self.compile_teacher and mode == "bf16-compile":
            if self.compiled_unet is None:
                self.plain_unet.to(memory_format=torch.channels_last)
                self.compiled_unet = torch.compile(self.plain_unet)
            self.teacher.unet = self.compiled_unet
        self.student.load_state_dict(self.init_state)
        self.student.to(memory_format=torch.contiguous_format)
        recipe = Recipe("gpu", Component("ddpm-unet"), Component("unet", {"preset": self.preset}), train=cfg)
        method = setups.PrefilledDKDM(self.teacher, self.student, pool=self.pool)
        stamps: list[float] = []
        loss = method.loss

        def timed_loss(*args: Any, **kwargs: Any):
            sync()
            stamps.append(time.perf_counter())
            return loss(*args, **kwargs)

        method.loss = timed_loss  # type: ignore[method-assign]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as out:
            train(recipe, self.teacher, self.student, method, Run(out), quiet=True)
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else float("nan")
        self.teacher.to(self.device, torch.float32)  # back to fp32 for the next mode
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][warmup:], peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--compile-teacher", action="store_true", help="also torch.compile the teacher UNet")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: running as a CPU smoke test (figures are not GPU figures)")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False

    bench = Bench(args.batch, args.preset, args.compile_teacher)
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    flops = step_flops(
        bench.teacher.to(bench.device), bench.student.to(bench.device), args.batch, bench.device
    )
    peak = peak_flops(device_name)
    per_rep: dict[str, list[float]] = {m: [] for m in args.modes}
    memory: dict[str, float] = {}
    for rep in range(args.reps):
        for mode in args.modes if rep % 2 == 0 else list(reversed(args.modes)):
            times, mem = bench.run(mode, args.steps, args.warmup)
            per_rep[mode].append(statistics.median(times))
            memory[mode] = max(memory.get(mode, 0.0), mem)
    rows = {}
    base = statistics.median(per_rep[args.modes[0]])
    for mode in args.modes:
        med = statistics.median(per_rep[mode])
        rows[mode] = {
            "step_s_median": med,
            "step_s_per_rep": per_rep[mode],
            "samples_per_s": args.batch / med,
            "speedup_over_first_mode": base / med,
            "peak_memory_mib": memory[mode],
            "tflops_per_s": flops / med / 1e12,
            "mfu_bf16_peak": None if peak is None else flops / med / peak,
        }
    print(f"device {device_name}; step FLOPs {flops / 1e12:.2f} TFLOP (batch {args.batch}); peak bf16 {peak}")
    print(
        f"{'mode':<14} {'s/step':>8} {'samples/s':>10} {'speedup':>8} {'peak MiB':>9} {'TFLOP/s':>8} {'MFU':>6}"
    )
    for mode, r in rows.items():
        mfu = "n/a" if r["mfu_bf16_peak"] is None else f"{100 * r['mfu_bf16_peak']:.1f}%"
        print(
            f"{mode:<14} {r['step_s_median']:>8.4f} {r['samples_per_s']:>10.1f} {r['speedup_over_first_mode']:>8.2f} "
            f"{r['peak_memory_mib']:>9.0f} {r['tflops_per_s']:>8.2f} {mfu:>6}"
        )
    path = write_result(
        "gpu_speed" if torch.cuda.is_available() else "gpu_speed_cpu_smoke",
        {
            "device": device_name,
            "batch": args.batch,
            "preset": args.preset,
            "compile_teacher": args.compile_teacher,
            "step_flops": flops,
            "peak_bf16_flops": peak,
            "goals": GOALS,
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
