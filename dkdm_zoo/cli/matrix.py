"""`dkdm-zoo matrix`: which teacher family x student x method pairs work, and why not."""

from __future__ import annotations

from typing import Annotated

import typer

from dkdm_zoo.cli import flags
from dkdm_zoo.cli.common import console, print_json, registry_of


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def matrix(
    ctx: typer.Context,
    teachers: Annotated[
        str | None, typer.Option(help="comma-separated teacher families (default: all)")
    ] = None,
    students: Annotated[
        str | None, typer.Option(help="comma-separated students (default: all registered)")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated methods (default: all registered)")
    ] = None,
    as_json: flags.Json = False,
) -> None:
    """Build every teacher family x student x method with tiny models and train one step on CPU."""
    import torch
    from rich.table import Table

    from dkdm_zoo.sampling.progress import progress_bar
    from dkdm_zoo.testing.matrix import compatibility_matrix, matrix_pairs

    torch.set_num_threads(1)
    registry = registry_of(ctx)
    pairs = matrix_pairs(registry, _names(teachers), _names(students), _names(methods))
    with progress_bar(len(pairs), "building pairs", enabled=not as_json, transient=True) as advance:
        results = compatibility_matrix(registry, pairs, progress=advance)
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    method_names = list(dict.fromkeys(r.method for r in results))
    table = Table(title="teacher family x student: one tiny training step per method")
    table.add_column("teacher")
    table.add_column("student")
    for name in method_names:
        table.add_column(name, justify="center")
    notes: dict[str, int] = {}
    marks = {"ok": "[green]ok[/]", "unavailable": "[yellow]n/a[/]"}
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in results:
        cell = marks.get(r.status)
        if cell is None or r.status == "unavailable":
            number = notes.setdefault(f"{r.status}: {r.reason}", len(notes) + 1)
            cell = f"{cell or ('[red]no[/]' if r.status == 'unsupported' else '[red]ERROR[/]')} [{number}]"
        rows.setdefault((r.teacher, r.student), {})[r.method] = cell
    for (teacher, student), cells in rows.items():
        table.add_row(teacher, student, *(cells.get(m, "") for m in method_names))
    console.print(table)
    for text, number in notes.items():
        console.print(f"[{number}] {text}", markup=False)
