"""`dkdm-zoo sample SOURCE`: images from a teacher (NAME or NAME@PATH) or a run directory, as a PNG grid.

Torch-free at import: the body imports the generation code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dkdm_zoo.cli import flags
from dkdm_zoo.errors import UserError


def parse_labels(value: str | None) -> list[int] | str | None:
    """``--labels 0,1,2`` -> [0, 1, 2]; ``--labels all`` -> "all" (balanced 0..K-1)."""
    if value is None:
        return None
    value = value.strip()
    if value == "all":
        return "all"
    try:
        labels = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--labels {value!r}: expected comma-separated class ids (0,1,2) or 'all'") from None
    if not labels:
        raise UserError("--labels: expected comma-separated class ids (0,1,2) or 'all'")
    return labels


def default_output(source: Any, n: int, seed: int) -> Path:
    """``RUN/samples-N-SEED.png`` for a run (beside, never over, the samples.png that distill's
    evaluation wrote and export ships), ``samples-<name>.png`` in the working folder for a teacher."""
    if source.run is not None:
        return source.run.path / f"samples-{n}-{seed}.png"
    return Path(f"samples-{source.name}.png")


def sample(
    ctx: typer.Context,
    source: flags.Source,
    n: flags.Count = 64,
    steps: flags.Steps = flags.STEPS,
    sampler: flags.Sampler = flags.SAMPLER,
    labels: Annotated[
        str | None,
        typer.Option(help="class labels, e.g. 0,1,2 (cycled to --n) or 'all' for balanced classes"),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="a text prompt (repeatable; cycled to --n)")
    ] = None,
    guidance_scale: Annotated[
        float | None, typer.Option(help="classifier-free guidance scale (default: the teacher's)")
    ] = None,
    seed: flags.Seed = flags.SEED,
    batch_size: flags.BatchSize = flags.BATCH_SIZE,
    out: Annotated[
        Path | None,
        typer.Option(
            help="PNG grid path (default: RUN/samples-N-SEED.png, or samples-NAME.png for a teacher)"
        ),
    ] = None,
    individual: Annotated[
        Path | None, typer.Option(help="also write each image as a PNG into this folder")
    ] = None,
    teacher_path: flags.TeacherPath = None,
) -> None:
    """Generate images from a teacher or a trained run and save them as a PNG grid."""
    from dkdm_zoo.cli.common import (
        announce,
        check_output_file,
        check_output_folder,
        console,
        is_main_process,
        registry_of,
    )
    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.images import save_grid, save_individual
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.sampling.settings import SamplingSettings

    if out is not None:
        check_output_file(out, "--out", image=True)
    if individual is not None:
        check_output_folder(individual, "--individual")
    parsed = parse_labels(labels)
    src = load_source(
        source, registry_of(ctx), teacher_options=flags.teacher_options(teacher_path), announce=announce
    )
    settings = SamplingSettings(
        steps=steps, sampler=sampler, guidance_scale=guidance_scale, seed=seed, batch_size=batch_size
    )
    images, _, info = timed_generate(
        src, n, settings, labels=parsed, prompts=prompt, progress=is_main_process()
    )
    grid = save_grid(images, out if out is not None else default_output(src, n, seed))
    console.print(f"wrote {len(images)} images to {grid} ({images.shape[-1]}x{images.shape[-2]} each)")
    if individual is not None:
        save_individual(images, individual)
        console.print(f"wrote {len(images)} PNG files to {individual}/")
    console.print(
        f"{info['s_per_image'] * 1000:.1f} ms per image, {info['nfe_per_image']} network evaluation(s) per image "
        f"({info['sampler']}), {info['wall_s']:.2f} s in all"
    )
