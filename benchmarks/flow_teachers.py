"""Scale smoke: a full-size random-weight stabilityai/stable-diffusion-3.5-medium through the CLI.

The SD3.5-medium copy (2.5B MMDiT-X, CLIP-L, CLIP-G, T5-XXL, 16-channel VAE) is built by
``dkdm_zoo.testing.flow_hub_fixtures`` with the real pipeline class's save_pretrained, in bfloat16
(float32 would not fit a 24 GiB machine), into a Hugging Face cache under ``--work``; then, with
HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing there, in fresh processes:

    distill --teacher stabilityai/stable-diffusion-3.5-medium --dry-run --json
    distill ... --steps 2 --batch-size 1 (DKDM, 1 pool slot, 1-step DDIM init, teacher in bf16)

recording wall time and peak RSS. ``--without-t5`` drops text_encoder_3 (4.7B of the 8.1B
parameters), as the pipeline allows (zero T5 states); ``--resolution`` samples smaller images than
the 1024 px default (the CPU cost of a 2.5B forward grows with the token count). Not run in CI.

Run: nice python -m benchmarks.flow_teachers --work /tmp/dkdm-flow-teachers --without-t5 --resolution 256
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.real_teachers import parameters, run

REPO = "stabilityai/stable-diffusion-3.5-medium"


def build(work: Path, without_t5: bool) -> dict[str, Any]:
    import torch

    from dkdm_zoo.testing.flow_hub_fixtures import sd35_medium_pipeline
    from dkdm_zoo.testing.hub_fixtures import write_hub_cache

    folder = work / "folders" / ("sd35-medium-no-t5" if without_t5 else "sd35-medium")
    start = time.perf_counter()
    if not (folder / "model_index.json").is_file():
        torch.set_default_dtype(torch.bfloat16)  # built in bf16: 8.1B float32 parameters are 32 GB
        pipe = sd35_medium_pipeline("full", t5=not without_t5)
        pipe.save_pretrained(folder, safe_serialization=True)
        del pipe
        torch.set_default_dtype(torch.float32)
    snapshot = write_hub_cache(work / "hub", REPO, folder)
    return {
        "build_s": round(time.perf_counter() - start, 1),
        "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        "parameters": parameters(snapshot),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dkdm-flow-teachers"))
    parser.add_argument("--without-t5", action="store_true", help="drop text_encoder_3 (T5-XXL)")
    parser.add_argument("--resolution", type=int, default=None, help="image size in pixels (default 1024)")
    args = parser.parse_args()
    work = args.work.resolve()
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    built = build(work, args.without_t5)
    print(f"built {REPO}: {built}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / "hub"), COLUMNS="120", PYTHONUNBUFFERED="1")
    teacher = ["--teacher", REPO, "--student", "unet", "--preset", "tiny"]
    teacher += ["--set", 'teacher.prompts=["a photograph of an astronaut riding a horse"]']
    teacher += ["--set", "teacher.dtype=bfloat16", "--set", "train.teacher_dtype=bfloat16"]
    if args.resolution:
        teacher += ["--set", f"teacher.resolution={args.resolution}"]
    two_steps = [
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--set",
        "method.rho=0.001",
        "--set",
        "method.pool_init=ddim",
    ]
    two_steps += ["--set", "method.pool_init_steps=1", "--set", "train.checkpoint_every=0"]
    two_steps += ["--set", "train.preview_samples=1", "--set", "train.preview_steps=1"]
    commands = [
        ["distill", *teacher, "--dry-run", "--json"],
        ["distill", *teacher, *two_steps, "--out", str(runs / "sd35-dkdm"), "--overwrite"],
    ]
    rows = []
    for argv in commands:
        row = run(argv, env, runs)
        row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        rows.append(row)
        print(json.dumps(row), flush=True)
    path = write_result(
        "flow_teachers_sd35_medium",
        {
            "without_t5": args.without_t5,
            "resolution": args.resolution or 1024,
            "load_average_before": [round(x, 2) for x in load_before],
            "built": built,
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
