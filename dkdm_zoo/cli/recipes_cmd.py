"""`recipes list` and `recipes show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from dkdm_zoo.cli import flags
from dkdm_zoo.cli.common import ZooGroup, console, print_json, registry_of

app = typer.Typer(
    cls=ZooGroup,
    no_args_is_help=True,
    help="Recipes: data-only TOML files naming teacher, student, method and settings.",
)


@app.command("list")
def list_recipes(
    ctx: typer.Context,
    as_json: flags.Json = False,
) -> None:
    """List the recipes every plugin registered."""
    from dkdm_zoo.config.catalog import discover_recipes

    recipes, problems = discover_recipes(registry_of(ctx))
    if as_json:
        print_json([{**vars(r), "path": str(r.path)} for r in recipes.values()])
        return
    table = Table()
    for column in ("name", "teacher", "student", "method", "description", "plugin"):
        table.add_column(column, overflow="fold")
    for r in sorted(recipes.values(), key=lambda r: r.name):
        table.add_row(r.name, r.teacher, r.student, r.method, r.description, r.plugin)
    console.print(table)
    for problem in problems:
        console.print(Text.assemble(("warning: ", "yellow"), problem))  # file text: never markup


@app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="recipe name")]) -> None:
    """Print a recipe, validated, with every default filled in."""
    from dkdm_zoo.config.catalog import discover_recipes, resolve_recipe

    registry = registry_of(ctx)
    recipes, _ = discover_recipes(registry)
    if name not in recipes:
        raise registry.unknown_name("recipes", name, recipes)
    recipe = resolve_recipe(str(recipes[name].path), registry)
    console.print(Text(f"# {recipes[name].path} (plugin: {recipes[name].plugin})"))
    console.print(Syntax(recipe.dumps(), "toml", theme="ansi_dark", background_color="default"))
