"""A first trial on a new teacher with default settings: how long until the first training step, and
until the run is done (goal: under 2 minutes on the 2-core CPU machine).

The trial: `dkdm-zoo distill --teacher ddpm-unet@DIR --student unet --steps 3 --batch-size 4` on a
random 16x16 RGB UNet2DModel teacher of 652K parameters (larger than the 177K one of the issue
that reported 15 minutes, so no easier) (DDPM scheduler, T = 1000), exactly
as a user would type it (a subprocess through the installed CLI). "First step" is read from the run's
metrics.jsonl (the "start" record is written after the pool initialisation, before step 1); the
planned teacher forwards of every pool initialisation come from DKDM's own plan().

Run: python -m benchmarks.first_step
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

UNET = {
    "sample_size": 16,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}


def save_teacher(folder: Path) -> int:
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**UNET)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return sum(p.numel() for p in unet.parameters())


def planned_init_forwards(folder: Path) -> dict[str, int]:
    import torch

    from dkdm_zoo.methods.dkdm import DKDM
    from dkdm_zoo.teachers.ddpm_unet import load

    teacher = load(path=str(folder))
    plans = {}
    for init, k in (("ancestral", 1), ("ddim", 10), ("ddim", 4), ("trajectory", 10)):
        plans[f"{init}" + ("" if init == "ancestral" else f" K={k}")] = (
            DKDM(teacher, torch.nn.Linear(1, 1), pool_init=init, pool_init_steps=k).plan(4, 3).init_forwards
        )
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "teacher"
        params = save_teacher(folder)
        plans = planned_init_forwards(folder)
        for rep in range(args.reps):
            out = Path(tmp) / f"run{rep}"
            cmd = ["dkdm-zoo", "distill", "--teacher", f"ddpm-unet@{folder}", "--student", "unet", "--steps", "3",
                   "--batch-size", "4", "--out", str(out), "--quiet"]  # fmt: skip
            start = time.time()
            subprocess.run(cmd, check=True, env={**os.environ, "COLUMNS": "120"})
            wall = time.time() - start
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            first = next(r for r in records if r.get("event") == "start")
            runs.append({"wall_s": wall, "to_first_step_s": first["time"] - start})
            print(f"rep {rep}: first step after {runs[-1]['to_first_step_s']:.1f} s, done after {wall:.1f} s")
    shown = shlex.join([c if not c.startswith("ddpm-unet@") else "ddpm-unet@DIR" for c in cmd])
    print(f"teacher: {params:,} parameters; planned pool-init forwards by init: {plans}")
    path = write_result(
        "first_step",
        {"command": shown, "teacher_params": params, "planned_init_forwards": plans, "runs": runs},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
