"""The digits results table: teacher, data-trained, synthetic-dataset and DKDM students, BOOT.

Every row is a real `dkdm-zoo` command (recorded in the JSON), trained at an EQUAL budget (same
steps and batch) and evaluated with the shipped digit classifier against the real digits, for
several seeds; the table reports the mean and the spread (min..max) over seeds.

    python tools/results_digits.py ddpm --seeds 0 1            # digits-ddpm rows
    python tools/results_digits.py dit --seeds 0 1             # digits-dit rows (class accuracy)
    python tools/results_digits.py boot --seeds 0 1            # BOOT one-step vs teacher DDIM steps
    python tools/results_digits.py boot-dit --seeds 0 1        # the same on the class-conditional teacher
    python tools/results_digits.py init --seeds 0 1            # DKDM pool initialisations, equal budget
    python tools/results_digits.py flow --seeds 0 1            # digits-flow: DKDM, SiD, BOOT vs Euler steps
    python tools/results_digits.py pruned --seeds 0 1          # digits-dit pruned to half: copied vs scratch
    python tools/results_digits.py arch                        # finished ddpm/dit runs -> digits-arch-*.json
    python tools/results_digits.py table                       # JSON -> docs/results/digits.md
    python tools/results_digits.py figure                      # BOOT vs teacher DDIM, same noise -> PNG

Runs go to runs/results/ (resumable: a finished run with its eval JSON is not redone); two runs
train at once with one thread each (--workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from results_rows import AGAINST, BOOT_ROWS, TEACHER, TITLES, rows_for, slug  # tools/ is on sys.path
from results_table import markdown, summarise

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "runs" / "results"
RESULTS = REPO / "docs" / "results"
CLI = ["dkdm-zoo"]

# Equal training budget for every trained row of a table.
BUDGET = {"steps": 800, "batch_size": 64}
EVAL_N = 500


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def train_and_eval(table: str, name: str, args: list[str], seed: int) -> dict:
    out = RUNS / table / f"{slug(name)}-s{seed}"
    distill = [
        *CLI, "distill", *args, "--steps", str(BUDGET["steps"]), "--batch-size", str(BUDGET["batch_size"]),
        "--set", f"train.seed={seed}", "--set", "train.checkpoint_every=0", "--set", "train.preview_every=0",
        "--out", str(out.relative_to(REPO)), "--quiet",
    ]  # fmt: skip
    evaluations = {
        against: [*CLI, "eval", str(out.relative_to(REPO)), "--against", against, "--n", str(EVAL_N),
                  "--seed", str(seed), "--json-out", str((out / f"eval-{against}.json").relative_to(REPO))]
        for against in AGAINST[table]
    }  # fmt: skip
    log = out.parent / f"{slug(name)}-s{seed}.log"
    if not (out / "student" / "config.json").exists():  # a finished run is evaluated, not retrained
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run([*distill, "--overwrite"], log)
        (out / "train_wall_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    if table in SHARED_SAMPLES:  # one sampling scores both (the command that does it, recorded)
        evaluations = {"data, teacher": ["python", "tools/results_digits.py", "score", str(out.relative_to(REPO)),
                                         "--seeds", str(seed)]}  # fmt: skip
        if not all((out / f"eval-{a}.json").exists() for a in AGAINST[table]):
            score_once(out, TEACHER[table], seed)
    else:
        for against, cmd in evaluations.items():
            if not (out / f"eval-{against}.json").exists():
                run(cmd, log)
    result = json.loads((out / "eval-data.json").read_text())
    row = {
        "row": name,
        "seed": seed,
        "commands": [shlex.join(distill), *(shlex.join(c) for c in evaluations.values())],
        "train_wall_s": float((out / "train_wall_s.txt").read_text())
        if (out / "train_wall_s.txt").exists()
        else None,
        "metrics": result["metrics"],
        "teacher_forwards": _teacher_forwards(out),
        "s_per_image": result.get("s_per_image"),
        "nfe_per_image": result.get("nfe_per_image"),
    }
    if (out / "eval-teacher.json").exists():
        row["fd_teacher"] = json.loads((out / "eval-teacher.json").read_text())["metrics"]["fd"]
    return row


# Tables whose runs are scored from ONE set of student samples against the data and against the
# teacher's 50-step DDIM (cached per seed): `dkdm-zoo eval RUN --against data|teacher` would sample
# the student twice and the teacher once per run, which the slow transformer students cannot afford here.
SHARED_SAMPLES = ("ddpm", "dit")


def teacher_reference(teacher: str, seed: int, registry) -> tuple:
    """The teacher's EVAL_N samples with 50-step DDIM (balanced labels), as `eval --against teacher`
    draws them for this seed, and their generation facts; cached under runs/results/reference/."""
    import torch

    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.sampling.settings import SamplingSettings

    path = RUNS / "reference" / f"{teacher}-n{EVAL_N}-s{seed}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["images"], saved["info"]
    source = load_source(f"digits-{teacher}", registry, device="cpu")
    labels = "all" if source.spec.conditioning == "class" else None
    images, _, info = timed_generate(
        source, EVAL_N, SamplingSettings(steps=50, seed=seed), labels=labels, progress=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "info": info}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return images, info


# Scoring runs in this process, and diffusers' from_pretrained builds models under accelerate's
# init_empty_weights, which patches torch.nn.Module process-wide: a classifier built in another
# thread meanwhile got meta tensors. One scoring at a time.
_SCORING = threading.Lock()


def score_once(out: Path, teacher: str, seed: int) -> None:
    """eval-data.json and eval-teacher.json of a run, as `dkdm-zoo eval` writes them, from one sampling."""
    with _SCORING:
        _score_once(out, teacher, seed)


def _score_once(out: Path, teacher: str, seed: int) -> None:
    import torch

    from dkdm_zoo.evaluation.metrics import evaluate
    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.sampling.settings import SamplingSettings

    torch.set_num_threads(1)
    registry = build_registry()
    reference, reference_info = teacher_reference(teacher, seed, registry)
    source = load_source(str(out), registry, device="cpu")
    labels = "all" if source.spec.conditioning == "class" else None
    images, used, info = timed_generate(
        source, EVAL_N, SamplingSettings(steps=50, seed=seed), labels=labels, progress=False
    )
    common = {"source": source.name, "seed": seed, **info}
    results = {
        "data": {**common, "against": "data", "metrics": evaluate(images, "data", labels=used)},
        "teacher": {**common, "against": "teacher", "teacher": {"name": f"digits-{teacher}", **reference_info},
                    "metrics": evaluate(images, reference, labels=used)},
    }  # fmt: skip
    for against, result in results.items():
        (out / f"eval-{against}.json").write_text(json.dumps(result, indent=2) + "\n")


def _teacher_forwards(out: Path) -> int | None:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    values = [json.loads(x).get("teacher_forwards") for x in lines]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def teacher_rows(table: str, seeds: list[int], steps_list: list[int]) -> list[dict]:
    """The teacher itself with its DDIM sampler at several step counts (and time per image)."""
    teacher = f"digits-{TEACHER[table]}"
    results = []
    for steps in steps_list:
        for seed in seeds:
            sampler = "Euler" if table == "flow" else "DDIM"  # a flow teacher's deterministic sampler
            row: dict = {"row": f"teacher {sampler} {steps}", "seed": seed, "commands": []}
            for against in AGAINST[table]:
                suffix = "" if against == "data" else f"-vs-{against}"
                out = RUNS / table / f"teacher-ddim{steps}-s{seed}{suffix}.json"
                cmd = [*CLI, "eval", teacher, "--against", against, "--n", str(EVAL_N), "--steps", str(steps),
                       "--seed", str(seed), "--json-out", str(out.relative_to(REPO))]  # fmt: skip
                if not out.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    run(cmd, out.with_suffix(".log"))
                result = json.loads(out.read_text())
                row["commands"].append(shlex.join(cmd))
                if against == "data":
                    row.update(metrics=result["metrics"], s_per_image=result.get("s_per_image"),
                               nfe_per_image=result.get("nfe_per_image"))  # fmt: skip
                else:
                    row["fd_teacher"] = result["metrics"]["fd"]
            results.append(row)
    return results


def boot_rows(table: str, seeds: list[int], workers: int) -> list[dict]:
    jobs = [(name, a, seed) for name, a in BOOT_ROWS[table].items() for seed in seeds]
    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(lambda job: train_and_eval(table, *job), jobs))
    return rows + teacher_rows(table, seeds, [1, 2, 4, 10, 50])


def figure(table: str, seed: int = 0, n: int = 16) -> Path:
    """One picture: rows are the teacher's DDIM at 1, 4, 10 and 50 steps, then the BOOT generator
    (seed 0 run), all from the SAME starting noise (and the same classes), so rows compare trajectory
    endpoints image by image."""
    import torch

    from dkdm_zoo.generation.images import save_grid
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.sampling.settings import SamplingSettings

    registry = build_registry()
    labels = [i % 10 for i in range(n)] if TEACHER[table] == "dit" else None
    teacher = load_source(f"digits-{TEACHER[table]}", registry)
    rows = [
        teacher.generate(n, SamplingSettings(steps=k, seed=seed), labels=labels, progress=False)[0]
        for k in (1, 4, 10, 50)
    ]
    for name in BOOT_ROWS[table]:
        run_dir = RUNS / table / f"{slug(name)}-s0"
        rows.append(
            load_source(str(run_dir), registry).generate(
                n, SamplingSettings(seed=seed), labels=labels, progress=False
            )[0]
        )
    grid = torch.cat(rows)
    grid = torch.nn.functional.interpolate(grid, scale_factor=4, mode="nearest")  # 8x8 digits are tiny
    return save_grid(grid, RESULTS / f"{table}-samples.png", nrow=n)


def note_for(table: str, seeds: list[int]) -> str:
    return (
        f"Equal budget: {BUDGET['steps']} steps x batch {BUDGET['batch_size']}; {EVAL_N} samples, 50-step "
        f"{'Euler' if table == 'flow' else 'DDIM'} (one-step generators: 1 step), scored against the 1797 real digits in the shipped classifier's feature space; "
        f"mean (min..max) over seeds {seeds}. Command: `python tools/results_digits.py {table} --seeds "
        f"{' '.join(map(str, seeds))} --steps {BUDGET['steps']} --batch-size {BUDGET['batch_size']}`."
    )


def collect(table: str, seeds: list[int]) -> list[dict]:
    """Rows of every run of this table whose evaluations finished (no training, no sampling)."""
    rows = []
    for path in sorted((RUNS / table).glob("teacher-ddim*-s*.json")):
        steps, seed = path.stem.removeprefix("teacher-ddim").split("-s")
        needed = [path.with_name(f"{path.stem}-vs-{a}.json") for a in AGAINST[table] if a != "data"]
        if seed.isdigit() and all(p.exists() for p in needed):
            rows += teacher_rows(table, [int(seed)], [int(steps)])
    names = BOOT_ROWS[table] if table in BOOT_ROWS else rows_for(table)
    for name in names:
        for seed in seeds:
            out = RUNS / table / f"{slug(name)}-s{seed}"
            if all((out / f"eval-{a}.json").exists() for a in AGAINST[table]):
                rows.append(train_and_eval(table, name, names[name], seed))
    rows.sort(key=lambda r: (not r["row"].startswith("teacher"), r["row"].startswith("teacher") and
                             int(r["row"].split()[-1]), r["row"]))  # fmt: skip
    return rows


def write_arch(table: str, seeds: list[int]) -> dict:
    """docs/results/digits-arch-TABLE.json: the finished runs of this table at every student's defaults
    (DKDM and synthetic rows, beside the teacher's 50-step DDIM); the file's earlier "before" is kept."""
    rows = [
        r
        for r in collect(table, seeds)
        if not r["row"].startswith("teacher") or r["row"] == "teacher DDIM 50"
    ]
    path = RESULTS / f"digits-arch-{table}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    data = {
        "title": f"digits-{table}: every student at its own defaults",
        "note": f"{BUDGET['steps']} steps x {BUDGET['batch_size']}; the method's and each student's defaults and "
        f"nothing else (each run's recipe.toml holds the values); {EVAL_N} samples, 50-step DDIM; per-row seeds "
        "in 'seeds', commands in each row. Command: `python tools/results_digits.py arch`.",
        "budget": BUDGET, "eval_n": EVAL_N, "rows": rows, "summary": summarise(rows),
        **({"before": old["before"]} if "before" in old else {}),
    }  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        choices=[
            "ddpm",
            "dit",
            "boot",
            "boot-dit",
            "init",
            "flow",
            "pruned",
            "collect",
            "arch",
            "table",
            "figure",
            "score",
        ],
    )
    parser.add_argument("run", nargs="?", help="score: the run folder to evaluate (its table from its path)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=BUDGET["steps"])
    parser.add_argument("--batch-size", type=int, default=BUDGET["batch_size"])
    parser.add_argument("--rows", nargs="*", help="only these rows (names as in the table)")
    args = parser.parse_args()
    BUDGET.update(steps=args.steps, batch_size=args.batch_size)
    if args.what == "score":  # eval-data.json and eval-teacher.json of one run folder, one sampling
        out = (REPO / args.run).resolve()
        score_once(out, TEACHER[out.parent.name], args.seeds[0])
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "figure":  # the BOOT tables' picture (their seed-0 runs must have finished)
        for table in ("boot", "boot-dit"):
            if all((RUNS / table / f"{slug(name)}-s0" / "student").exists() for name in BOOT_ROWS[table]):
                print(f"wrote {figure(table)}")
        return
    if args.what == "table":
        parts = []
        for table in ("ddpm", "dit", "boot", "boot-dit", "init", "flow", "pruned"):
            path = RESULTS / f"digits-{table}.json"
            if path.exists():
                data = json.loads(path.read_text())
                parts.append(f"### {data['title']}\n\n{data['note']}\n\n{markdown(table, data)}\n")
    elif args.what == "collect":  # tabulate the runs that finished, without training anything
        for table in ("ddpm", "dit", "boot", "boot-dit", "init", "flow", "pruned"):
            rows = collect(table, args.seeds)
            if rows:
                path = RESULTS / f"digits-{table}.json"
                old = json.loads(path.read_text()) if path.exists() else {}
                data = {
                    **old,
                    "rows": rows,
                    "summary": summarise(rows),
                    "title": old.get("title", TITLES[table]),
                    "note": old.get("note", note_for(table, args.seeds)),
                    "budget": BUDGET,
                    "eval_n": EVAL_N,
                }
                path.write_text(json.dumps(data, indent=2) + "\n")
                print(markdown(table, data))
        return
    if args.what == "arch":  # the cross-architecture tables: every student at its defaults, nothing trained
        for table in ("ddpm", "dit"):
            print(markdown(table, write_arch(table, args.seeds)))
        return
    if args.what == "table":
        (RESULTS / "digits.md").write_text("\n".join(parts))
        print("\n".join(parts))
        return
    start = time.perf_counter()
    if args.what in BOOT_ROWS:
        rows = boot_rows(args.what, args.seeds, args.workers)
        title = TITLES[args.what]
    else:
        selected = {k: v for k, v in rows_for(args.what).items() if not args.rows or k in args.rows}
        jobs = [(args.what, name, a, seed) for name, a in selected.items() for seed in args.seeds]
        with ThreadPoolExecutor(args.workers) as pool:
            rows = teacher_rows(args.what, args.seeds, [50]) + list(
                pool.map(lambda j: train_and_eval(*j), jobs)
            )
        title = TITLES[args.what]
    note = note_for(args.what, args.seeds)
    data = {"title": title, "note": note, "budget": BUDGET, "eval_n": EVAL_N, "rows": rows, "summary": summarise(rows),
            "wall_s": time.perf_counter() - start, "python": sys.version.split()[0]}  # fmt: skip
    print(markdown(args.what, data))
    if args.rows:  # a subset: the table's JSON keeps its other rows (`collect` or `arch` tabulates them all)
        print(
            "--rows given: docs/results left as they were; `collect` or `arch` tabulates every finished run"
        )
        return
    (RESULTS / f"digits-{args.what}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
