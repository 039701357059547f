"""The `dkdm-zoo` command. Building the app loads plugins but never imports torch."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dkdm_zoo.cli import listing, plugin_cmd, recipes_cmd
from dkdm_zoo.cli.common import ZooGroup


def _version(value: bool) -> None:
    if value:
        from dkdm_zoo import __version__

        typer.echo(f"dkdm-zoo {__version__}")
        raise typer.Exit()


def create_app(registry: Any = None) -> typer.Typer:
    """The CLI over ``registry`` (default: plugins from this environment); plugin sub-apps attached.
    Every command reaches the registry through its context (``cli.common.registry_of``)."""
    if registry is None:
        from dkdm_zoo.registry import build_registry

        registry = build_registry()
    app = typer.Typer(
        cls=ZooGroup,
        no_args_is_help=True,
        add_completion=False,
        help="Data-free knowledge distillation of diffusion models: any teacher, any student (DKDM, BOOT).",
        pretty_exceptions_show_locals=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
        ] = False,
    ) -> None:
        """dkdm-zoo."""
        ctx.obj = registry

    app.command("list")(listing.list_cmd)
    app.command("info")(listing.info_cmd)
    app.command("plugins")(listing.plugins_cmd)
    app.add_typer(recipes_cmd.app, name="recipes")
    app.add_typer(plugin_cmd.app, name="plugin")
    _add_optional_commands(app)
    for command in registry.commands.values():
        app.add_typer(command.app, name=command.name, help=command.help or None)
    return app


def _add_optional_commands(app: typer.Typer) -> None:
    """Commands whose modules are torch-free at import; their bodies import what they need."""
    import importlib

    for name, module_name, attr in (
        ("distill", "dkdm_zoo.cli.distill", "distill"),
        ("sample", "dkdm_zoo.cli.sample", "sample"),
        ("eval", "dkdm_zoo.cli.evaluate", "evaluate"),
        ("matrix", "dkdm_zoo.cli.matrix", "matrix"),
        ("export", "dkdm_zoo.cli.export", "export"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        app.command(name)(getattr(module, attr))


def main() -> None:
    create_app()()


if __name__ == "__main__":
    main()
