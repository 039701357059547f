"""`dkdm-zoo plugin new NAME --kind student|teacher|method`: write a ready, installable plugin package.

Torch-free: the package is rendered from text templates shipped inside dkdm-zoo (dkdm_zoo.scaffold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dkdm_zoo.cli.common import ZooGroup, console, registry_of
from dkdm_zoo.scaffold import Kind, new_plugin, plugin_names

app = typer.Typer(
    cls=ZooGroup, no_args_is_help=True, help="Write a new plugin package (student, teacher or method)."
)

# What to run once the plugin is installed, per kind.
TRY: dict[str, str] = {
    "student": "dkdm-zoo distill --recipe quickstart --student {name} --steps 10 --out runs/{name}-try",
    "teacher": "dkdm-zoo distill --recipe quickstart --teacher {name} --steps 10 --out runs/{name}-try",
    "method": "dkdm-zoo distill --teacher digits-ddpm --student unet --method {name} --steps 10 --out runs/{name}-try",
}


@app.command("new")
def new(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="the name to register, e.g. my-net (lowercase, '-' between words)")
    ],
    kind: Annotated[Kind, typer.Option(help="what the plugin provides")],
    directory: Annotated[
        Path, typer.Option("--dir", help="where to create the folder NAME (default: here)")
    ] = Path("."),
) -> None:
    """Write NAME/: pyproject.toml (entry point), a working implementation on dkdm_zoo.toolkit, tests, README."""
    names = plugin_names(name)  # a bad name is refused before any plugin is loaded
    taken = {entry.name for entry in registry_of(ctx).list(f"{kind}s")}
    folder = new_plugin(name, kind, directory, taken=taken)
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    lines = [
        f"wrote {folder}/ : a {kind} plugin '{name}' (package {names.module}, dist {names.dist})",
        *(f"  {path}" for path in written),
        "next:",
        f"  pip install -e {folder}",
        f"  cd {folder} && pytest",
        f"  {TRY[kind].format(name=name)}",
    ]
    for line in lines:  # no wrapping or markup: paths and commands are meant to be copied
        console.print(line, soft_wrap=True, markup=False)
