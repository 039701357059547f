"""`dkdm-zoo eval SOURCE`: sample quality of a teacher or a run in the digit classifier's feature space.

``--against data`` compares with the real digits; ``--against teacher`` with the run's own teacher
(data-free). ``--prompts FILE`` is the data-free judge of a prompt-conditioned student
(``evaluation.judge``): student and teacher from the same prompts and noise, FD between them (CLIP,
Inception), CLIP scores, a teacher | student grid per prompt. Torch-free at import: the body imports
the evaluation code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dkdm_zoo.cli import flags


def evaluate(
    ctx: typer.Context,
    source: flags.Source,
    against: Annotated[
        str,
        typer.Option(
            help="data: the real digits; teacher: the run's teacher's samples (data-free; a teacher is compared with itself at --teacher-steps); --prompts always compares with the teacher"
        ),
    ] = "data",
    n: flags.Count = 1000,
    steps: flags.Steps = flags.STEPS,
    teacher_steps: Annotated[
        int, typer.Option(help="sampler steps of the teacher for --against teacher")
    ] = 50,
    sampler: flags.Sampler = flags.SAMPLER,
    seed: flags.Seed = flags.SEED,
    batch_size: flags.BatchSize = flags.BATCH_SIZE,
    json_out: Annotated[
        Path | None,
        typer.Option(
            help="JSON report path (default: RUN/eval-AGAINST.json, or eval-NAME-AGAINST.json for a teacher)"
        ),
    ] = None,
    teacher_path: flags.TeacherPath = None,
    prompts: Annotated[
        str | None,
        typer.Option(
            help="judge a prompt-conditioned student against its teacher on these prompts: a text file, one per line, or 'default' (100 shipped prompts)"
        ),
    ] = None,
    clip_model: Annotated[
        str, typer.Option(help="the CLIP model of --prompts: a folder or a hub id (the cache offline)")
    ] = "openai/clip-vit-large-patch14",
    per_prompt: Annotated[int, typer.Option(help="images per prompt for --prompts")] = 1,
    inception_weights: Annotated[
        str | None,
        typer.Option(
            help="local Inception FID weights (.safetensors) for --prompts' Inception FD (default: $DKDM_ZOO_INCEPTION_WEIGHTS; skipped without)"
        ),
    ] = None,
) -> None:
    """Evaluate samples (FD, precision, recall, class accuracy) against the digits or the teacher; with
    --prompts, judge a prompt-conditioned student against its teacher (FD, CLIP score, grids)."""
    from dkdm_zoo.cli.common import (
        announce,
        check_output_file,
        console,
        invocation,
        is_main_process,
        registry_of,
    )
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.evaluation.report import (
        AGAINST,
        evaluate_source,
        print_tables,
        require_digits_like,
        write_json,
    )
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.sampling.settings import SamplingSettings

    if prompts is not None and against != "teacher" and _given(ctx, "against"):
        raise UserError(f"--prompts compares the student with its teacher: drop --against {against}")
    if against not in AGAINST:
        raise UserError(f"--against must be one of {', '.join(AGAINST)}, got {against!r}")
    if json_out is not None:
        check_output_file(json_out, "--json-out")
    registry = registry_of(ctx)
    src = load_source(
        source, registry, teacher_options=flags.teacher_options(teacher_path), announce=announce
    )
    settings = SamplingSettings(steps=steps, sampler=sampler, seed=seed, batch_size=batch_size)
    if prompts is not None:
        from dkdm_zoo.cli.judge import judge

        judge(
            ctx,
            src,
            registry,
            prompts,
            settings,
            teacher_steps,
            clip_model,
            per_prompt,
            inception_weights,
            json_out,
        )
        return
    require_digits_like(src)
    result = evaluate_source(
        src, against, n, settings, teacher_steps=teacher_steps, registry=registry, progress=is_main_process()
    )
    result["command"] = invocation(ctx)
    rows = {src.name: result}
    if "teacher" in result:
        title = f"{n} samples vs {n} samples of teacher '{result['teacher']['name']}' ({teacher_steps} steps)"
    else:
        title = f"{n} samples vs the real digits"
    print_tables(console, rows, title=title)
    path = write_json(json_out if json_out is not None else _json_path(src, against), result)
    console.print(f"wrote {path}")


def _json_path(src, against: str) -> Path:
    if src.run is not None:
        return src.run.eval_path_for(against)
    return Path(f"eval-{src.name}-{against}.json")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed the option (not its default); by name, as typer may bring its own click."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
