"""`dkdm-zoo distill`: train a student from a teacher with a method, into a run folder.

Torch-free at import: the body imports the engine. Flags override the recipe; ``--set`` takes
``section.key=value`` (e.g. ``train.lr=2e-4``, ``method.rho=0.2``, ``student.preset=tiny``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from dkdm_zoo.errors import UserError


def distill(
    ctx: typer.Context,
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
    allow_changes: Annotated[
        bool,
        typer.Option(
            help="--resume: train on with settings the checkpoints were not trained with (batch size, "
            "seed, method options...); run.json records them"
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a recipe value: section.key=value")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="build everything, print memory, FLOPs, teacher forwards and a time estimate, exit"
        ),
    ] = False,
    gpu: Annotated[
        str,
        typer.Option(
            help="--dry-run: estimate wall time on this accelerator (H100, H200, A100, L40S, L4...)"
        ),
    ] = "H100",
    processes: Annotated[
        int | None,
        typer.Option(
            help="--dry-run: plan for this many processes, under ddp and fsdp (default: WORLD_SIZE, else 1)"
        ),
    ] = None,
    utilisation: Annotated[
        float, typer.Option(help="--dry-run: the share of the accelerator's bf16 peak the estimate assumes")
    ] = 0.4,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="--dry-run: print the plan as one JSON object (nothing else on stdout)"),
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars or summaries")] = False,
    lora: Annotated[
        int | None,
        typer.Option(
            metavar="RANK",
            help="train LoRA adapters of this rank on the teacher's own network (--student teacher, "
            "student.lora_rank); the base stays the teacher's, frozen and shared",
        ),
    ] = None,
) -> None:
    """Distill a teacher into a student (DKDM by default); writes checkpoints, metrics and the final student."""
    started = time.perf_counter()
    from dkdm_zoo.cli.common import announce, console, is_main_process, print_json, registry_of
    from dkdm_zoo.config import build as builder
    from dkdm_zoo.config import resolve as resolver
    from dkdm_zoo.config.resume import resume_changes
    from dkdm_zoo.runs.writer import open_run

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if quiet:
        from dkdm_zoo.cli.common import quiet_libraries

        quiet_libraries()
    if allow_changes and not resume:
        raise UserError("--allow-changes applies to --resume only")
    registry = registry_of(ctx)
    if lora is not None:
        student = "teacher" if student is None and recipe is None else student
        set_ = [*(set_ or []), f"student.lora_rank={lora}"]
    flags = dict(teacher=teacher, teacher_path=teacher_path, student=student, preset=preset, method=method)
    common = dict(steps=steps, batch_size=batch_size, overrides=set_, announce=announce)
    resolved, changed, allowed = None, [], []
    if resume and out is None:  # the run folder this command would have created
        resolved = resolver.resolve(registry, recipe=recipe, **flags, **common)
        out = resolver.default_out(resolved)
    stored = _stored_recipe(out, registry) if resume else None
    if stored is not None:
        # the same command plus --resume: flags over the stored recipe (or over --recipe), then only
        # what a checkpoint does not fix may differ
        resolved = resolver.resolve(
            registry, recipe=recipe, base=None if recipe else stored, **flags, **common
        )
        # against what the newest checkpoint was trained with (recipe.toml may have been edited since)
        trained_with, where = _checkpoint_recipe(out, registry, stored)
        changed, allowed = resume_changes(trained_with, resolved, where, allow=allow_changes)
    elif resolved is None:
        resolved = resolver.resolve(registry, recipe=recipe, **flags, **common)
    out = out if out is not None else resolver.default_out(resolved)

    if dry_run:
        from dkdm_zoo.engine.budget import peak_flops, plan

        peak = peak_flops(gpu)
        if peak is None:
            from dkdm_zoo.engine.budget import PEAK_BF16

            raise UserError(f"--gpu {gpu!r}: unknown accelerator; known: {', '.join(PEAK_BF16)}")
        if not 0 < utilisation <= 1:
            raise UserError(f"--utilisation must be in (0, 1], got {utilisation}")
        from dkdm_zoo.cli.plan import memory_plans, plan_json, print_plan

        if processes is not None and processes < 1:
            raise UserError(f"--processes must be at least 1, got {processes}")
        from dkdm_zoo.students.materialise import empty_copies
        from dkdm_zoo.teachers.unread import weights_unread

        # shapes are all a plan needs: the teacher's weights stay unread, copies of its network empty
        with weights_unread(), empty_copies():
            built = builder.build(resolved, registry)
        budget = plan(built)
        memory = memory_plans(built, budget, resolved, processes, gpu)
        if as_json:
            print_json(
                plan_json(budget, resolved, out, gpu=gpu, peak=peak, utilisation=utilisation, memory=memory)
            )
        else:
            print_plan(
                console, budget, resolved, out, gpu=gpu, peak=peak, utilisation=utilisation, memory=memory
            )
        return
    if as_json:
        raise UserError("--json prints the --dry-run plan: pass --dry-run with it")

    from dkdm_zoo.engine import train
    from dkdm_zoo.engine.sharding import network_copies
    from dkdm_zoo.runs import Run

    main = is_main_process()
    run = Run(out)
    try:
        # under torchrun only rank 0 opens (checks, locks, and on an early failure restores) the folder
        with open_run(out, resume=resume, overwrite=overwrite, lock=main) as writer:
            with network_copies(resolved, main):  # under FSDP, copies of the teacher's network only on rank 0
                built = builder.build(resolved, registry)
            writer.clear()  # --overwrite: the old run goes only once the new one is built
            # the engine's one line on what it resumed from, with what this command changed
            note = f"; changed: {', '.join(changed)}" if changed else ""
            note += f"; allowed (--allow-changes): {', '.join(allowed)}" if allowed else ""
            history = _allowed_before(run) + allowed if resume else []
            result = train(
                resolved,
                built.teacher,
                built.student,
                built.method,
                run,
                resume=resume,
                quiet=quiet,
                announce=lambda line: announce(f"{line}{note}" if line.startswith("--resume") else line),
                allowed_changes=history,
            )
            written = list(result.exported)
            if main and result.exported:
                # under FSDP the teacher's denoiser is sharded: the evaluation rebuilds it from run.json
                teacher = built.teacher if result.sharding == "ddp" else None
                if resolved.train.final_eval_samples > 0:
                    _final_evaluation(run, resolved, teacher, registry, quiet)
                written += _export(run, registry, built, result.student)
    except KeyboardInterrupt:
        if main:
            _interrupted(ctx, run, resume)
        raise typer.Exit(130) from None
    if not quiet and main:
        console.print(
            f"run {out}: {result.step} steps on {result.world_size} process(es), "
            f"{result.teacher_forwards:,} teacher forwards; wrote {', '.join(written) or 'checkpoints only'}; "
            f"wall time {time.perf_counter() - started:.1f} s"
        )


def _interrupted(ctx: typer.Context, run, resume: bool) -> None:
    """Ctrl-C: one line on what is saved and the command that continues from it."""
    from dkdm_zoo.cli.common import invocation, print_error
    from dkdm_zoo.engine.checkpoint import find_latest

    latest = find_latest(run.checkpoints_dir) if run.path.is_dir() else None
    if latest is None:
        print_error(f"interrupted: no checkpoint was written; {run.path} is as it was before this command")
        return
    command = invocation(ctx)
    command += "" if resume else " --resume"
    print_error(f"interrupted: {latest} is saved; continue with: {command}")


def _export(run, registry, built, student=None) -> list[str]:
    """RUN/pipeline and its model card, written once, after the evaluation the card shows (a LoRA
    student: its adapters for the teacher's pipeline; `dkdm-zoo export --merge` merges). A pipeline
    that cannot be built (a plugin teacher without its VAE, say) is a warning, not a lost run.
    ``student``: the engine's whole final student (gathered from its shards under FSDP)."""
    import warnings

    from dkdm_zoo.cli.common import announce
    from dkdm_zoo.export.run import export_run

    student = student if student is not None else built.student
    try:
        exported = export_run(run, registry, student=student.eval(), teacher=built.teacher)
    except UserError as exc:
        warnings.warn(f"{run.path}: no diffusers pipeline exported: {exc}", stacklevel=2)
        return []
    if exported.note:  # a LoRA merged: its teacher's pipeline class loads none
        announce(exported.note)
    return ["pipeline"]


def _stored_recipe(out: Path, registry):
    """The recipe of the run being resumed (its options checked like any recipe's), or None when
    ``out`` holds none (opening the folder then says it is no run)."""
    from dkdm_zoo.config.recipes import load_recipe_file
    from dkdm_zoo.config.validation import validate_against_registry

    if not (out / "recipe.toml").is_file():
        return None
    return validate_against_registry(load_recipe_file(out / "recipe.toml"), registry)


def _checkpoint_recipe(out: Path, registry, stored):
    """(the recipe the newest checkpoint was trained with, where it is), for a resume to compare
    against; refuses a folder with no checkpoint, saying what it holds. Checkpoints written before
    they recorded their recipe: RUN/recipe.toml."""
    from dkdm_zoo.config.recipes import load_recipe_file
    from dkdm_zoo.config.validation import validate_against_registry
    from dkdm_zoo.engine.checkpoint import RECIPE, find_latest
    from dkdm_zoo.runs import Run

    run = Run(out)
    latest = find_latest(run.checkpoints_dir)
    if latest is None:
        then = (
            "sample, eval or export it, or retrain it with --overwrite"
            if run.finished
            else "start it again with --overwrite"
        )
        raise UserError(
            f"--resume: {out} has no checkpoint to resume from (it holds {run.summary()}); {then}"
        )
    if not (latest / RECIPE).is_file():
        return stored, str(out)
    recipe = validate_against_registry(load_recipe_file(latest / RECIPE), registry)
    return recipe, f"{out} (trained as {latest.name}/{RECIPE} says)"


def _allowed_before(run) -> list[str]:
    """What earlier ``--allow-changes`` resumes recorded in run.json (kept: the history grows)."""
    try:
        return list(run.manifest.allowed_changes)
    except UserError:
        return []


def _final_evaluation(run, recipe, teacher, registry, quiet: bool) -> None:
    """``train.final_eval_samples``: score student and teacher (eval.json, samples.png)."""
    from dkdm_zoo.evaluation.report import final_report

    final_report(
        run,
        recipe.train.final_eval_samples,
        registry=registry,
        teacher=teacher,
        seed=recipe.train.seed,
        quiet=quiet,
    )
