"""CLI start-up time: `dkdm-zoo --help` and `dkdm-zoo list` (goal: < 0.5 s), and what they import.

Run: python benchmarks/cli_startup.py --repeats 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import median_time, write_result

COMMANDS = {"--help": ["--help"], "list": ["list"], "list --json": ["list", "--json"], "plugins": ["plugins"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rows = {}
    python = [sys.executable, "-m", "dkdm_zoo.cli.app"]
    baseline, _ = median_time(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeats
    )
    for label, argv in COMMANDS.items():
        median, times = median_time(
            lambda argv=argv: subprocess.run([*python, *argv], check=True, capture_output=True), args.repeats
        )
        imported = (
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import sys; from dkdm_zoo.cli.app import create_app\ntry: create_app()({argv!r})\nexcept SystemExit: pass\n"
                    "print('HEAVY=' + ','.join(m for m in ('torch','diffusers','timm','accelerate','numpy') if m in sys.modules))",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.split("HEAVY=")[-1]
            .strip()
        )
        rows[label] = {
            "median_s": round(median, 4),
            "times_s": [round(t, 4) for t in times],
            "heavy_imports": imported or "none",
        }
    print(f"{'command':<14} {'median (s)':>10}  heavy imports   (bare python start-up: {baseline:.3f} s)")
    for label, row in rows.items():
        print(f"dkdm-zoo {label:<14} {row['median_s']:>8.3f}  {row['heavy_imports']}")
    path = write_result("cli_startup", {"goal_s": 0.5, "python_startup_s": round(baseline, 4), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
