"""`dkdm-zoo distill`: train a student from a teacher with a method, into a run folder.

Torch-free at import: the body imports the engine. Flags override the recipe; ``--set`` takes
``section.key=value`` (e.g. ``train.lr=2e-4``, ``method.rho=0.2``, ``student.preset=tiny``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from dkdm_zoo.errors import UserError


def distill(
    teacher: Annotated[
        str | None,
        typer.Option(
            help="teacher NAME, FAMILY@SOURCE, or a folder / hub id whose model_index.json names its family"
        ),
    ] = None,
    teacher_path: Annotated[
        str | None, typer.Option(help="the teacher's source (hub id or local folder)")
    ] = None,
    student: Annotated[
        str | None, typer.Option(help="student architecture (see `dkdm-zoo list students`)")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="student size preset")] = None,
    method: Annotated[str | None, typer.Option(help="distillation method (default: dkdm)")] = None,
    recipe: Annotated[str | None, typer.Option(help="recipe name or path to a .toml")] = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size per process")] = None,
    out: Annotated[
        Path | None, typer.Option(help="run folder (default: runs/RECIPE-OR-TEACHER-STUDENT-METHOD)")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the run in --out from its latest checkpoint")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a recipe value: section.key=value")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="build everything, print sizes and the teacher-forward budget, exit")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars or summaries")] = False,
) -> None:
    """Distill a teacher into a student (DKDM by default); writes checkpoints, metrics and the final student."""
    started = time.perf_counter()
    from dkdm_zoo import build as builder
    from dkdm_zoo.cli.common import announce, console, get_registry
    from dkdm_zoo.recipes import load_recipe_file

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    registry = get_registry()
    flags = dict(teacher=teacher, teacher_path=teacher_path, student=student, preset=preset, method=method)
    base = None
    if resume and out is not None and (out / "recipe.toml").is_file():
        if recipe is not None or any(v is not None for v in flags.values()):
            raise UserError(
                "--resume continues the stored recipe; only --steps, --batch-size and --set may change"
            )
        base = load_recipe_file(out / "recipe.toml")
        flags = {}
    resolved = builder.resolve(
        registry,
        recipe=recipe,
        base=base,
        steps=steps,
        batch_size=batch_size,
        overrides=set_,
        announce=announce,
        **flags,
    )
    out = out if out is not None else builder.default_out(resolved)

    if dry_run:
        built = builder.build(resolved, registry)
        _print_plan(console, builder.plan(built), resolved, out)
        return

    from dkdm_zoo.engine import rundir, train

    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prepares the folder
        rundir.prepare_run_dir(out, resume=resume, overwrite=overwrite)
    built = builder.build(resolved, registry)
    result = train(resolved, built.teacher, built.student, built.method, out, resume=resume, quiet=quiet)
    if not quiet and int(os.environ.get("RANK", "0")) == 0:
        console.print(
            f"run {out}: {result.step} steps on {result.world_size} process(es), "
            f"{result.teacher_forwards:,} teacher forwards; wrote {', '.join(result.exported) or 'checkpoints only'}; "
            f"wall time {time.perf_counter() - started:.1f} s"
        )


def _print_plan(console, plan: dict, recipe, out: Path) -> None:
    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    train = recipe.train
    console.print(f"teacher  {recipe.teacher.name}  {plan['teacher_params']:,} parameters")
    console.print(
        f"student  {recipe.student.name} ({recipe.student.options.get('preset', 'small')})  {plan['student_params']:,} parameters"
    )
    console.print(f"method   {recipe.method.name}  {recipe.method.options or ''}")
    console.print(
        f"train    {train.steps:,} steps x batch {train.batch_size} x accum {train.grad_accum}  -> {out}"
    )
    console.print(
        f"memory   ~{mib(plan['memory_bytes'])} per process (weights, grads, AdamW, EMA, method state; no activations)"
    )
    for key in ("pool_slots", "pool_bytes", "dataset_bytes"):
        if key in plan:
            console.print(f"         {key} = {mib(plan[key]) if key.endswith('bytes') else f'{plan[key]:,}'}")
    init, tr = plan.get("init_forwards", 0), plan.get("train_forwards", 0)
    console.print(
        f"teacher forwards per process: init {init:,} + training {tr:,} = {init + tr:,} (samples; CFG counts twice)"
    )
