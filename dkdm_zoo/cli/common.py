"""Shared CLI plumbing: the registry for this process, consoles, and user-error handling."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from dkdm_zoo.errors import UserError

_state: dict[str, Any] = {"registry": None}

# Console reads COLUMNS / NO_COLOR / TERM from the environment, so tests and CI can pin the width.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def set_registry(registry: Any) -> None:
    _state["registry"] = registry


def get_registry() -> Any:
    """The registry of this CLI process (built once, on first use)."""
    if _state["registry"] is None:
        from dkdm_zoo.registry import build_registry

        _state["registry"] = build_registry()
    return _state["registry"]


def invocation(ctx: typer.Context) -> str:
    """The running command as a user would type it, rebuilt from the parsed parameters (works under
    CliRunner and torchrun alike, unlike sys.argv); options left at their defaults are omitted."""
    import shlex

    parts = ["dkdm-zoo", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif value is None or value is False or value == param.default:
            continue
        elif value is True:
            parts.append(param.opts[0])
        else:
            for item in value if isinstance(value, list | tuple) else [value]:
                parts += [param.opts[0], str(item)]
    return shlex.join(parts)


def announce(line: str) -> None:
    """A one-line note on stderr (stdout stays clean for --json), from the main process only."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        err_console.print(line, soft_wrap=True, markup=False, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class ZooGroup(TyperGroup):
    """Turns a ``UserError`` anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            from rich.markup import escape

            # escaped: messages quote TOML ("[teacher]", "[...]") that rich would read as markup
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, markup=True, highlight=False
            )
            raise typer.Exit(2) from None
