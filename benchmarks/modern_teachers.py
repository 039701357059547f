"""Scale smoke for SDXL and PixArt: full-size random-weight copies through the dry-run, 2 training
steps and sampling, each command in a fresh process with its wall time and peak RSS.

stabilityai/stable-diffusion-xl-base-1.0 (2.6B UNet + 0.8B of text encoders + 84M VAE) and
PixArt-alpha/PixArt-Sigma-XL-2-1024-MS (0.6B transformer + 4.7B T5-XXL encoder) are built by
``dkdm_zoo.testing.sdxl_fixtures`` (float32: about 14 GB and 21 GB written) into a Hugging Face cache
under ``--work``; then, offline, each shipped recipe runs

    distill --recipe R --dry-run
    distill --recipe R --steps 2 --batch-size 1   (the recipe's teacher dtype; no previews)
    sample REPO --n 1 --steps 2 --prompt ...
    distill --recipe R2 --dry-run                  (recipes that only plan here: SDXL's BK recipe)

Not run in CI. PixArt-Σ's T5-XXL needs about 40 GB of RAM to build in float32: pass --only for SDXL
alone on a smaller machine.

Run: nice python -m benchmarks.modern_teachers --work /tmp/dkdm-modern-teachers
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.real_teachers import parameters, run

REPOS = {
    "stabilityai/stable-diffusion-xl-base-1.0": {
        "recipe": "sdxl-to-one-step-sid",
        "two_steps": ["--set", "train.preview_every=0", "--set", "train.final_eval_samples=0"],
        # its fp32 pruned student with AdamW (~1.5B parameters) does not train in 24 GiB: plan only
        "dry_run_only": ["sdxl-to-bk-dkdm"],
    },
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": {
        "recipe": "pixart-sigma-to-student",
        "two_steps": [
            "--set",
            "method.rho=0.001",
            "--set",
            "method.pool_init=ddim",
            "--set",
            "method.pool_init_steps=2",
            "--set",
            "train.preview_every=0",
            "--set",
            "train.final_eval_samples=0",
        ],
    },
}
COMMON = ["--steps", "2", "--batch-size", "1", "--set", "train.checkpoint_every=0"]


def build(work: Path, repos: list[str], size: str) -> dict[str, Any]:
    from dkdm_zoo.testing.hub_fixtures import write_hub_cache
    from dkdm_zoo.testing.sdxl_fixtures import build_modern_repo

    built = {}
    for repo in repos:
        folder = work / "folders" / repo.replace("/", "--")
        start = time.perf_counter()
        if not (folder / "model_index.json").is_file():
            build_modern_repo(repo, folder, size=size)
        snapshot = write_hub_cache(work / "hub", repo, folder)
        built[repo] = {"build_s": round(time.perf_counter() - start, 1), "parameters": parameters(snapshot)}
        print(f"built {repo}: {built[repo]}", flush=True)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dkdm-modern-teachers"))
    parser.add_argument("--only", nargs="*", default=list(REPOS), help="repository ids (default: both)")
    parser.add_argument("--size", choices=("full", "narrow"), default="full", help="narrow: a quick dry run")
    args = parser.parse_args()
    work = args.work.resolve()
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    built = build(work, args.only, args.size)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / "hub"), COLUMNS="120", PYTHONUNBUFFERED="1")
    rows: dict[str, list[dict[str, Any]]] = {}
    for repo in args.only:
        recipe, out = REPOS[repo]["recipe"], runs / REPOS[repo]["recipe"]
        commands = [
            ["distill", "--recipe", recipe, "--dry-run"],
            [
                "distill",
                "--recipe",
                recipe,
                *COMMON,
                *REPOS[repo]["two_steps"],
                "--out",
                str(out),
                "--overwrite",
            ],
            [
                "sample",
                repo,
                "--n",
                "1",
                "--steps",
                "2",
                "--prompt",
                "a photograph of an astronaut riding a horse",
                "--out",
                str(runs / f"{recipe}.png"),
            ],
        ]
        commands += [["distill", "--recipe", r, "--dry-run"] for r in REPOS[repo].get("dry_run_only", [])]
        rows[repo] = []
        for argv in commands:
            rows[repo].append(run(argv, env, work))
            print(rows[repo][-1], flush=True)
    path = write_result(
        "modern_teachers",
        {
            "size": args.size,
            "built": built,
            "runs": rows,
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
