"""Evaluation reports shared by `dkdm-zoo eval`, `dkdm-zoo sample` and the end of training.

- ``evaluate_source``: generate from a source and score it in the digit classifier's feature space,
  against the real digits or against the source's own teacher (data-free);
- ``metrics_table`` / ``per_class_table``: several models side by side (e.g. teacher vs student);
- ``final_report``: what `dkdm-zoo distill` prints and writes when ``train.final_eval_samples > 0``
  (``RUN/eval.json`` and ``RUN/samples.png``, paths owned by ``dkdm_zoo.runs.Run``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.generation.images import save_grid
from dkdm_zoo.runs import Run
from dkdm_zoo.sampling.settings import SamplingSettings

AGAINST = ("data", "teacher")
GRID_LIMIT = 100  # images in the end-of-run grid (10 x 10)
TEACHER_STEPS = 50  # the teacher's reference sampler at the end of a run: 50 DDIM steps


def require_digits_like(source: Any) -> None:
    """The built-in evaluator scores 1-channel images with the shipped digit classifier only."""
    channels = source.spec.image_shape[0]
    if channels != 1:
        raise UserError(
            f"{source.name} makes {channels}-channel images: the built-in evaluator is for the 1-channel digits "
            "benchmark; for real images use dkdm_zoo.evaluation.fid_inception (Inception FID)"
        )


def _class_labels(source: Any) -> str | None:
    return "all" if source.spec.conditioning == "class" else None


def timed_generate(
    source: Any,
    n: int,
    settings: SamplingSettings,
    *,
    labels: Any = None,
    prompts: Any = None,
    progress: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """Images, labels and the generation facts a report records (steps, NFE, wall time)."""
    start = time.perf_counter()
    images, used = source.generate(n, settings, labels=labels, prompts=prompts, progress=progress)
    wall = time.perf_counter() - start
    info = {
        "n": n,
        "steps": source.nfe_per_image(settings.steps),
        "sampler": _generator_name(source.nfe_per_image(1)) if source.one_step else settings.sampler,
        "nfe_per_image": source.nfe_per_image(settings.steps),
        "wall_s": wall,
        "s_per_image": wall / n,
    }
    return images, used, info


def _generator_name(calls: int) -> str:
    return "one-step" if calls == 1 else f"{calls}-step generator"


def evaluate_source(
    source: Any,
    against: str = "data",
    n: int = 1000,
    settings: SamplingSettings | None = None,
    *,
    teacher_steps: int = 50,
    registry: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate n samples (balanced labels when class-conditional) with ``settings`` and score them
    against data or the teacher (its samples with ``teacher_steps``, built through ``registry``,
    which ``against="teacher"`` needs)."""
    from dkdm_zoo.evaluation.metrics import evaluate

    settings = settings if settings is not None else SamplingSettings()
    if against not in AGAINST:
        raise UserError(f"--against must be one of {', '.join(AGAINST)}, got {against!r}")
    require_digits_like(source)
    reference_source = None
    if against == "teacher":
        if registry is None:
            raise ValueError("evaluate_source(against='teacher') needs the command's registry")
        reference_source = source.teacher_source(registry)  # fails before any sampling when there is none
    labels = _class_labels(source)
    images, used, info = timed_generate(source, n, settings, labels=labels, progress=progress)
    result: dict[str, Any] = {"source": source.name, "against": against, "seed": settings.seed, **info}
    reference: Any = "data"
    if reference_source is not None:
        teacher_settings = dataclasses.replace(settings, steps=teacher_steps, guidance_scale=None)
        ref_images, _, ref_info = timed_generate(
            reference_source, n, teacher_settings, labels=labels, progress=progress
        )
        reference = ref_images
        result["teacher"] = {"name": reference_source.name, **ref_info}
    result["metrics"] = evaluate(images, reference=reference, labels=used)
    return result


_COLUMNS = (
    ("fd", "FD", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("accuracy", "accuracy", "{:.3f}"),
)


def metrics_table(rows: dict[str, dict[str, Any]], title: str | None = None):
    """A rich table, one row per model: NFE, time per image and the feature-space metrics.

    Each row is an ``evaluate_source``-style dict (``metrics`` plus generation facts) or a bare
    metrics dict.
    """
    from rich.table import Table

    table = Table(title=title)
    table.add_column("model")
    table.add_column("NFE/image", justify="right")
    table.add_column("s/image", justify="right")
    shown = [c for c in _COLUMNS if any(c[0] in _metrics(r) for r in rows.values())]
    for _, header, _ in shown:
        table.add_column(header, justify="right")
    for name, row in rows.items():
        metrics = _metrics(row)
        nfe = row.get("nfe_per_image")
        per_image = row.get("s_per_image")
        cells = [
            name,
            "" if nfe is None else str(nfe),
            "" if per_image is None else f"{per_image:.4f}",
        ]
        cells += [fmt.format(metrics[key]) if key in metrics else "" for key, _, fmt in shown]
        table.add_row(*cells)
    return table


def per_class_table(rows: dict[str, dict[str, Any]]):
    """Per-class accuracy (class-conditional models), or None when no row has it."""
    from rich.table import Table

    with_classes = {
        k: _metrics(r)["per_class_accuracy"] for k, r in rows.items() if "per_class_accuracy" in _metrics(r)
    }
    if not with_classes:
        return None
    classes = sorted({int(c) for per in with_classes.values() for c in per})
    table = Table(title="accuracy per class")
    table.add_column("model")
    for c in classes:
        table.add_column(str(c), justify="right")
    for name, per in with_classes.items():
        per = {int(k): v for k, v in per.items()}
        table.add_row(name, *[f"{per[c]:.2f}" if c in per else "" for c in classes])
    return table


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("metrics", row)


def print_tables(console: Any, rows: dict[str, dict[str, Any]], title: str | None = None) -> None:
    console.print(metrics_table(rows, title=title))
    per_class = per_class_table(rows)
    if per_class is not None:
        console.print(per_class)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def final_report(
    run: Run,
    n: int,
    *,
    registry: Any,
    teacher: Any = None,
    seed: int = 0,
    steps: int = 50,
    device: Any = None,
    console: Any = None,
    quiet: bool = False,
) -> dict[str, Any] | None:
    """Score the finished student AND its teacher against the digits (same seed), print them side by
    side, write ``run.eval_path`` (eval.json) and ``run.samples_path`` (samples.png). ``teacher`` is
    the in-memory teacher of the run (else it is rebuilt from run.json through ``registry``);
    ``quiet`` prints nothing. Returns the report, or None when it was skipped."""
    from rich.console import Console

    from dkdm_zoo.evaluation.metrics import evaluate
    from dkdm_zoo.generation.sources import ImageSource, load_source

    console = console if console is not None else Console(highlight=False, quiet=quiet)
    progress = not quiet
    student = load_source(str(run.path), registry, device=device)
    try:
        require_digits_like(student)
    except UserError as exc:
        console.print(f"final evaluation skipped: {exc}")
        return None

    labels = _class_labels(student)
    steps = min(steps, student.spec.num_train_timesteps)  # a short schedule allows fewer steps
    models: dict[str, dict[str, Any]] = {}
    settings = SamplingSettings(steps=steps, seed=seed)
    images, used, info = timed_generate(student, n, settings, labels=labels, progress=progress)
    models["student"] = {**info, "metrics": evaluate(images, reference="data", labels=used)}

    teacher_note = None
    name = run.manifest.teacher
    try:
        if teacher is not None and not teacher.modules():
            raise UserError(f"the run's teacher '{name}' has no network to sample")
        if teacher is not None:
            teacher_source = ImageSource(name, teacher.spec, teacher=teacher, device=student.device)
        else:
            teacher_source = student.teacher_source(registry)
        teacher_steps = min(TEACHER_STEPS, teacher_source.spec.num_train_timesteps)
        t_images, t_used, t_info = timed_generate(
            teacher_source,
            n,
            SamplingSettings(steps=teacher_steps, seed=seed),
            labels=labels,
            progress=progress,
        )
        models[f"teacher ({teacher_source.name})"] = {
            **t_info,
            "metrics": evaluate(t_images, reference="data", labels=t_used),
        }
    except UserError as exc:
        teacher_note = str(exc)

    report = {
        "run": str(run.path),
        "against": "data",
        "n": n,
        "seed": seed,
        "models": models,
        **({"teacher_skipped": teacher_note} if teacher_note else {}),
    }
    write_json(run.eval_path, report)
    grid = save_grid(images[:GRID_LIMIT], run.samples_path)
    print_tables(console, models, title=f"final evaluation: {n} samples vs the real digits (seed {seed})")
    if teacher_note:
        console.print(f"teacher not evaluated: {teacher_note}")
    console.print(f"wrote {run.eval_path} and {grid}")
    return report
