"""Scale smoke: full-size random-weight copies of the real hub teachers through every command.

google/ddpm-cifar10-32 (35.7M UNet, flat repo), facebook/DiT-XL-2-256 (675M + VAE) and Stable
Diffusion v1.5 (860M UNet + 123M CLIP text + 84M VAE) are built once by
``dkdm_zoo.testing.hub_fixtures`` into a Hugging Face cache under ``--work``; then, with
HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing there, each shipped hub recipe goes through

    info unet --teacher REPO          (auto-detected family, a student sized for it)
    distill --recipe R --dry-run
    distill --recipe R --steps 2 --batch-size 2 (pool: 2 slots, 2-step DDIM init; the recipe's previews)
    sample REPO --n 1 --steps 2

each in a fresh process, recording wall time and peak RSS (``os.wait4``'s ru_maxrss of that
process). Not run in CI (tens of GB written, tens of minutes on a CPU).

Run: nice python -m benchmarks.real_teachers --work /tmp/dkdm-real-teachers
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

REPOS = {
    "google/ddpm-cifar10-32": {"recipe": "cifar10-unet14m", "sample": []},
    "facebook/DiT-XL-2-256": {"recipe": "dit-xl2-to-small-dit", "sample": []},
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        "recipe": "sd-to-small-latent-unet",
        "sample": ["--prompt", "a photograph of an astronaut riding a horse"],
    },
}
TWO_STEPS = [
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--set",
    "method.rho=0.001",  # round(0.001 * 1000) * 2 = 2 pool slots
    "--set",
    "method.pool_init=ddim",
    "--set",
    "method.pool_init_steps=2",
    "--set",
    "train.checkpoint_every=0",
]


def build(work: Path, repos: list[str], size: str) -> dict[str, Any]:
    """The full-size cache (skipped when already there); parameter counts and build time per repo."""
    from dkdm_zoo.testing.hub_fixtures import build_repo, write_hub_cache

    built = {}
    for repo in repos:
        folder = work / "folders" / repo.replace("/", "--")
        start = time.perf_counter()
        if not (folder / "model_index.json").is_file():
            build_repo(repo, folder, size=size)
        snapshot = write_hub_cache(work / "hub", repo, folder)
        built[repo] = {
            "build_s": round(time.perf_counter() - start, 1),
            "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
            "parameters": parameters(snapshot),
        }
        print(f"built {repo}: {built[repo]}", flush=True)
    return built


def parameters(snapshot: Path) -> dict[str, int]:
    """Parameters per component, counted from the safetensors headers (nothing loaded)."""
    from safetensors import safe_open

    counts = {}
    for file in sorted(snapshot.rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            total = 0
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = handle.get_slice(key).get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                total += n
        folder = str(file.parent.relative_to(snapshot)) if file.parent != snapshot else "."
        counts[folder] = counts.get(folder, 0) + total  # a sharded model: every shard's tensors
    return counts


def run(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """One CLI command in a fresh process: exit code, wall time, peak RSS, its last output lines."""
    command = [sys.executable, "-m", "dkdm_zoo.cli.app", *argv]
    start = time.perf_counter()
    with (cwd / "log.txt").open("a") as log:
        log.write(f"\n$ dkdm-zoo {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    tail = (cwd / "log.txt").read_text().splitlines()[-6:]
    return {
        "command": "dkdm-zoo " + " ".join(argv),
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is in KiB on Linux
        "output_tail": tail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dkdm-real-teachers"))
    parser.add_argument("--only", nargs="*", default=list(REPOS), help="repository ids (default: all three)")
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
        recipe, sample_extra = REPOS[repo]["recipe"], REPOS[repo]["sample"]
        out = runs / recipe
        commands = [
            ["info", "unet", "--teacher", repo, "--preset", "base"],
            ["distill", "--recipe", recipe, "--dry-run"],
            ["distill", "--recipe", recipe, *TWO_STEPS, "--out", str(out), "--overwrite"],
            ["sample", repo, "--n", "1", "--steps", "2", "--out", str(runs / f"{recipe}.png"), *sample_extra],
        ]
        rows[repo] = []
        for argv in commands:
            row = run(argv, env, runs)
            row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            rows[repo].append(row)
            print(json.dumps(row), flush=True)
    path = write_result(
        "real_teachers" if args.size == "full" else "real_teachers_narrow",
        {
            "size": args.size,
            "load_average_before": [round(x, 2) for x in load_before],
            "built": built,
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
