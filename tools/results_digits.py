"""The digits results table: teacher, data-trained, synthetic-dataset and DKDM students, BOOT.

Every row is a real `dkdm-zoo` command (recorded in the JSON), trained at an EQUAL budget (same
steps and batch) and evaluated with the shipped digit classifier against the real digits, for
several seeds; the table reports the mean and the spread (min..max) over seeds.

    python tools/results_digits.py ddpm --seeds 0 1            # digits-ddpm rows
    python tools/results_digits.py dit --seeds 0 1             # digits-dit rows (class accuracy)
    python tools/results_digits.py boot --seeds 0 1            # BOOT one-step vs teacher DDIM steps
    python tools/results_digits.py boot-dit --seeds 0 1        # the same on the class-conditional teacher
    python tools/results_digits.py init --seeds 0 1            # DKDM pool initialisations, equal budget
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
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "runs" / "results"
RESULTS = REPO / "docs" / "results"
CLI = ["dkdm-zoo"]

# Equal training budget for every trained row of a table.
BUDGET = {"steps": 800, "batch_size": 64}
EVAL_N = 500

SPEC = {
    "ddpm": ["--teacher", "spec", "--set", "teacher.sample_shape=[1,8,8]"],
    "dit": [
        "--teacher", "spec", "--set", "teacher.sample_shape=[1,8,8]", "--set", 'teacher.conditioning="class"',
        "--set", "teacher.num_classes=10", "--set", 'teacher.variance_type="learned_range"',
    ],
}  # fmt: skip


def init_rows() -> dict[str, list[str]]:
    """DKDM's pool initialisations at an equal training budget (the UNet student of the ddpm table)."""
    base = ["--teacher", "digits-ddpm", "--student", "unet", "--preset", "small", "--method", "dkdm",
            "--set", "method.rho=0.05", "--set", "train.lr=4e-4", "--set", "train.warmup_steps=50",
            "--set", "train.ema_decay=0.995"]  # fmt: skip
    rows = {"ancestral (paper)": [*base, "--set", 'method.pool_init="ancestral"']}
    for kind, steps in (
        ("ddim", 1),
        ("ddim", 2),
        ("ddim", 4),
        ("ddim", 10),
        ("trajectory", 10),
        ("trajectory", 100),
    ):
        rows[f"{kind} {steps}"] = [
            *base,
            "--set",
            f'method.pool_init="{kind}"',
            "--set",
            f"method.pool_init_steps={steps}",
        ]
    return rows


# Every student of the cross-architecture tables, built-in and plugin (row label -> registry name).
STUDENTS = {"unet": "unet", "dit": "dit", "convnext": "convnext", "uvit (plugin)": "uvit"}


def rows_for(table: str) -> dict[str, list[str]]:
    """Row name -> distill arguments (without budget, seed, output).

    The ddpm and dit tables use each student's defaults only (its preset and its declared training
    settings: no learning rate, warmup or EMA given here), so they show what a user gets.
    """
    if table == "init":
        return init_rows()
    teacher = f"digits-{table}"
    # DKDM at its defaults (pool of rho*T*b slots, 10-step DDIM init); the synthetic set is as large as
    # the real one, drawn with the teacher's 50-step DDIM.
    dkdm = ["--method", "dkdm"]
    synthetic = ["--method", "synthetic", "--set", "method.num_samples=1797", "--set", 'method.sampler="ddim"',
                 "--set", "method.sampler_steps=50"]  # fmt: skip
    rows = {}
    if table == "ddpm":
        rows["data unet"] = [*SPEC[table], "--method", "data", "--set", 'method.dataset="digits"',
                               "--student", "unet"]  # fmt: skip
    for label, student in STUDENTS.items():
        rows[f"DKDM {label}"] = ["--teacher", teacher, "--student", student, *dkdm]
        rows[f"synthetic {label}"] = ["--teacher", teacher, "--student", student, *synthetic]
    return rows


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


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
    from dkdm_zoo.generation import load_source

    path = RUNS / "reference" / f"{teacher}-n{EVAL_N}-s{seed}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["images"], saved["info"]
    source = load_source(f"digits-{teacher}", registry, device="cpu")
    labels = "all" if source.spec.conditioning == "class" else None
    images, _, info = timed_generate(source, EVAL_N, steps=50, labels=labels, seed=seed, progress=False)
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
    from dkdm_zoo.generation import load_source
    from dkdm_zoo.registry import build_registry

    torch.set_num_threads(1)
    registry = build_registry()
    reference, reference_info = teacher_reference(teacher, seed, registry)
    source = load_source(str(out), registry, device="cpu")
    labels = "all" if source.spec.conditioning == "class" else None
    images, used, info = timed_generate(source, EVAL_N, steps=50, labels=labels, seed=seed, progress=False)
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
            row: dict = {"row": f"teacher DDIM {steps}", "seed": seed, "commands": []}
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


# The BOOT generators: digits-ddpm's own architecture as a `unet` (initialised from the teacher, as
# in the paper); for digits-dit (a diffusers DiT, which no built-in student matches) a `dit` from scratch.
BOOT_ROWS = {
    "boot": {
        "BOOT unet (1 step)": ["--teacher", "digits-ddpm", "--student", "unet", "--preset", "small",
                               "--set", "student.block_out_channels=[32,64,64]", "--set", "student.layers_per_block=1",
                               "--set", "student.attention_resolutions=[4]", "--set", "student.min_resolution=2",
                               "--set", "student.dropout=0.0", "--method", "boot", "--set", "train.lr=2e-3",
                               "--set", "train.ema_decay=0.995"],
    },
    "boot-dit": {
        "BOOT dit (1 step)": ["--teacher", "digits-dit", "--student", "dit", "--preset", "small", "--method", "boot",
                              "--set", "train.lr=1e-3", "--set", "train.warmup_steps=50",
                              "--set", "train.ema_decay=0.995"],
    },
}  # fmt: skip
TEACHER = {"ddpm": "ddpm", "dit": "dit", "boot": "ddpm", "boot-dit": "dit", "init": "ddpm"}
AGAINST = {"ddpm": ("data", "teacher"), "dit": ("data", "teacher"), "boot": ("data", "teacher"), "boot-dit": ("data", "teacher"),
           "init": ("data", "teacher")}  # fmt: skip


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

    from dkdm_zoo.generation import load_source
    from dkdm_zoo.images import save_grid
    from dkdm_zoo.registry import build_registry

    registry = build_registry()
    labels = [i % 10 for i in range(n)] if TEACHER[table] == "dit" else None
    teacher = load_source(f"digits-{TEACHER[table]}", registry)
    rows = [teacher.generate(n, steps=k, labels=labels, seed=seed, progress=False)[0] for k in (1, 4, 10, 50)]
    for name in BOOT_ROWS[table]:
        run_dir = RUNS / table / f"{slug(name)}-s0"
        rows.append(
            load_source(str(run_dir), registry).generate(n, labels=labels, seed=seed, progress=False)[0]
        )
    grid = torch.cat(rows)
    grid = torch.nn.functional.interpolate(grid, scale_factor=4, mode="nearest")  # 8x8 digits are tiny
    return save_grid(grid, RESULTS / f"{table}-samples.png", nrow=n)


TITLES = {
    "ddpm": "digits-ddpm: every student with DKDM and the synthetic baseline, each at its defaults",
    "dit": "digits-dit (guidance 3, class-conditional): every student with DKDM and the synthetic baseline, each at its defaults",
    "boot": "BOOT on digits-ddpm: one step vs the teacher's DDIM",
    "boot-dit": "BOOT on digits-dit (guidance 3): one step vs the teacher's DDIM",
    "init": "DKDM pool initialisations on digits-ddpm (UNet student, rho 0.05)",
}


def note_for(table: str, seeds: list[int]) -> str:
    return (
        f"Equal budget: {BUDGET['steps']} steps x batch {BUDGET['batch_size']}; {EVAL_N} samples, 50-step DDIM "
        f"(BOOT: 1 step), scored against the 1797 real digits in the shipped classifier's feature space; "
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


def summarise(rows: list[dict]) -> list[dict]:
    by_row: dict[str, list[dict]] = {}
    for r in rows:
        by_row.setdefault(r["row"], []).append(r)
    summary = []
    for name, items in by_row.items():
        entry = {"row": name, "seeds": [i["seed"] for i in items], "commands": items[0]["commands"]}
        for key in ("fd", "precision", "recall", "accuracy"):
            values = [i["metrics"][key] for i in items if i["metrics"].get(key) is not None]
            if values:
                entry[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        values = [i["fd_teacher"] for i in items if i.get("fd_teacher") is not None]
        if values:
            entry["fd_teacher"] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        for key in ("s_per_image", "nfe_per_image", "train_wall_s", "teacher_forwards"):
            values = [i[key] for i in items if i.get(key) is not None]
            if values:
                entry[key] = statistics.fmean(values)
        summary.append(entry)
    return summary


def markdown(table: str, data: dict) -> str:
    has_acc = any("accuracy" in r for r in data["summary"])
    has_time = any("s_per_image" in r for r in data["summary"])
    has_vs_teacher = any("fd_teacher" in r for r in data["summary"])
    head = ["row", "FD vs data (lower better)"]
    head += ["FD vs teacher DDIM 50"] if has_vs_teacher else []
    head += ["precision", "recall"]
    head += ["class accuracy"] if has_acc else []
    head += ["NFE", "ms/image"] if has_time else []
    has_train = any("train_wall_s" in r for r in data["summary"])
    head += ["train s"] if has_train else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(entry: dict, key: str) -> str:
        v = entry.get(key)
        return "" if v is None else f"{v['mean']:.3f} ({v['min']:.3f}..{v['max']:.3f})"

    for r in data["summary"]:
        cells = [r["row"], fmt(r, "fd"), *([fmt(r, "fd_teacher")] if has_vs_teacher else []), fmt(r, "precision"),
                 fmt(r, "recall")]  # fmt: skip
        cells += [fmt(r, "accuracy")] if has_acc else []
        if has_time:
            nfe, spi = r.get("nfe_per_image"), r.get("s_per_image")
            cells += ["" if nfe is None else f"{nfe:.0f}", "" if spi is None else f"{1000 * spi:.2f}"]
        if has_train:
            cells += [f"{r['train_wall_s']:.0f}" if "train_wall_s" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what", choices=["ddpm", "dit", "boot", "boot-dit", "init", "collect", "table", "figure", "score"]
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
        for table in BOOT_ROWS:
            if all((RUNS / table / f"{slug(name)}-s0" / "student").exists() for name in BOOT_ROWS[table]):
                print(f"wrote {figure(table)}")
        return
    if args.what == "table":
        parts = []
        for table in ("ddpm", "dit", "boot", "boot-dit", "init"):
            path = RESULTS / f"digits-{table}.json"
            if path.exists():
                data = json.loads(path.read_text())
                parts.append(f"### {data['title']}\n\n{data['note']}\n\n{markdown(table, data)}\n")
    elif args.what == "collect":  # tabulate the runs that finished, without training anything
        for table in ("ddpm", "dit", "boot", "boot-dit", "init"):
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
    (RESULTS / f"digits-{args.what}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(args.what, data))


if __name__ == "__main__":
    main()
