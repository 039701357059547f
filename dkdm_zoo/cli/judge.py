"""The body of `dkdm-zoo eval SOURCE --prompts FILE` (``evaluation.judge``): loads the CLIP model and
the source's teacher, runs the judge, prints a table and writes the JSON report and the grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def judge(
    ctx: typer.Context,
    src: Any,
    registry: Any,
    prompts_file: str,
    settings: Any,
    teacher_steps: int,
    clip_model: str,
    per_prompt: int,
    inception_weights: str | None,
    json_out: Path | None,
) -> None:
    from rich.table import Table

    from dkdm_zoo.cli.common import console, invocation, is_main_process
    from dkdm_zoo.evaluation.clip import load_clip
    from dkdm_zoo.evaluation.judge import judge_prompts, read_prompts
    from dkdm_zoo.evaluation.report import write_json

    prompts, name = read_prompts(prompts_file)
    clip = load_clip(clip_model, device=src.device)
    reference = src.teacher_source(registry)
    if src.run is not None:
        path = json_out if json_out is not None else src.run.eval_path_for("prompts")
    else:
        path = json_out if json_out is not None else Path(f"eval-{src.name}-prompts.json")
    grid_dir = path.with_name(f"{path.stem}-grids")
    result = judge_prompts(
        src,
        reference,
        prompts,
        clip,
        settings=settings,
        teacher_steps=teacher_steps,
        per_prompt=per_prompt,
        grid_dir=grid_dir,
        inception_weights=inception_weights,
        progress=is_main_process(),
    )
    result["prompts_file"] = name
    result["command"] = invocation(ctx)
    table = Table(title=f"{len(prompts)} prompts x {per_prompt}: {src.name} vs its teacher {reference.name}")
    for column in ("model", "NFE/image", "CLIP score", "FD (CLIP)", "FD (Inception)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    fd = result["fd"]
    inception = "-" if fd["inception"] is None else f"{fd['inception']:.3f}"
    for label, row in ((reference.name, result["teacher_samples"]), (src.name, result["student"])):
        own = label == src.name
        table.add_row(
            label,
            str(row["nfe_per_image"]),
            f"{row['clip_score']:.2f}",
            f"{fd['clip']:.4f}" if own and fd["clip"] is not None else "",
            inception if own else "",
        )
    console.print(table)
    if "inception_skipped" in result:
        console.print(f"Inception FD skipped: {result['inception_skipped']}")
    console.print(f"wrote {write_json(path, result)} and {len(prompts)} grids in {grid_dir}")
