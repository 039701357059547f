"""Command-line flags more than one command takes, declared once (torch-free). The sampling flags'
defaults are ``SamplingSettings``'s, the one declaration of how to sample."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dkdm_zoo.sampling.settings import SamplingSettings

SOURCE_HELP = (
    "a run directory (has run.json), a teacher NAME or FAMILY@PATH, or a folder / hub id whose "
    "model_index.json names its family"
)

Source = Annotated[str, typer.Argument(help=SOURCE_HELP)]
Count = Annotated[int, typer.Option("--n", help="number of images")]
Steps = Annotated[int, typer.Option(help="sampler steps (ignored by one-step generators)")]
Sampler = Annotated[str, typer.Option(help="ddim or ddpm")]
Seed = Annotated[int, typer.Option(help="random seed: same seed, same images")]
BatchSize = Annotated[int, typer.Option(help="images per network batch")]
TeacherPath = Annotated[
    str | None, typer.Option(help="the teacher's source (hub id or folder) for a teacher NAME")
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]

#: the defaults of the sampling flags: SamplingSettings' own
DEFAULT = SamplingSettings.__dataclass_fields__
STEPS: int = DEFAULT["steps"].default
SAMPLER: str = DEFAULT["sampler"].default
SEED: int = DEFAULT["seed"].default
BATCH_SIZE: int = DEFAULT["batch_size"].default


def teacher_options(teacher_path: str | None) -> dict[str, Any]:
    """The teacher options ``--teacher-path`` gives a teacher NAME."""
    return {"path": teacher_path} if teacher_path is not None else {}
