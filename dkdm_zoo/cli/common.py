"""Shared CLI plumbing: the command's registry, the main process, consoles, and user-error handling."""

from __future__ import annotations

import contextlib
import errno
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from dkdm_zoo.errors import UserError

# Console reads COLUMNS / NO_COLOR / TERM from the environment, so tests and CI can pin the width.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def registry_of(ctx: typer.Context) -> Any:
    """The registry of this command: built once by ``create_app`` and carried by the root context
    (``ctx.obj``), the one way a command (a plugin's too) gets it; nothing keeps it in a global."""
    registry = ctx.find_root().obj
    if registry is None:
        raise RuntimeError(
            "dkdm-zoo commands run under dkdm_zoo.cli.app.create_app(), which sets the registry"
        )
    return registry


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


def is_main_process() -> bool:
    """Whether this is the main process of a launch (torchrun / accelerate set ``RANK``): the one place
    that reads it before the engine's Accelerator exists, so that only rank 0 prints and opens the folder."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def announce(line: str) -> None:
    """A one-line note on stderr (stdout stays clean for --json), from the main process only."""
    if is_main_process():
        err_console.print(line, soft_wrap=True, markup=False, highlight=False)


def quiet_libraries() -> None:
    """--quiet: no progress bars from the libraries either (transformers' "Loading weights" and
    "Writing model shards", diffusers' and huggingface_hub's), for the rest of this process."""
    import importlib

    for module in ("transformers.utils.logging", "diffusers.utils.logging"):
        try:
            importlib.import_module(module).disable_progress_bar()
        except (ImportError, AttributeError):
            pass
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_error(message: str) -> None:
    """``error: MESSAGE`` as one line on stderr; the message is printed as it is (never read as markup:
    messages quote TOML such as "[teacher]")."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, highlight=False)


def check_output_file(path: Path, flag: str, *, image: bool = False) -> None:
    """A file the command will write: not a folder, not under a file, and (``image``) an extension
    PIL writes. Checked before any work, so a typo costs nothing."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder: pass a file name")
    _check_parent(path, flag)
    if image:
        from PIL import Image

        Image.init()
        writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
        if path.suffix.lower() not in writable:
            raise UserError(
                f"{flag} {path}: {path.suffix or 'no extension'} is not an image format: use .png "
                "(or .jpg, .webp)"
            )


def check_output_folder(path: Path, flag: str) -> None:
    """A folder the command will write into: not a file, not under a file."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file: pass a folder")
    _check_parent(path, flag)


def _check_parent(path: Path, flag: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def _click_exceptions() -> Any:
    """The Click exceptions module Typer uses (Click itself, or the copy newer Typers vendor)."""
    import importlib

    return importlib.import_module(typer.BadParameter.__module__)


# OS errors a user causes and can fix (a full disk, a folder they cannot write): one line, exit 2
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_USER_OS_ERRORS = (*_DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS)


class ZooGroup(TyperGroup):
    """Turns a ``UserError`` anywhere below, and Click's own usage errors (a bad ``--n abc``, an
    unknown option), into one line on stderr and exit code 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with self._one_line_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with self._one_line_errors():
            return super().invoke(ctx)

    @staticmethod
    @contextlib.contextmanager
    def _one_line_errors() -> Iterator[None]:
        exceptions = _click_exceptions()
        try:
            yield
        except UserError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in _USER_OS_ERRORS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            hint = "; free some space and run the command again" if exc.errno in _DISK_FULL else ""
            print_error(f"{exc.strerror or exc}{where}{hint}")
            raise typer.Exit(2) from None
        except exceptions.ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: Typer shows its help
                raise
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print_error(f"{exc.format_message()}{hint}")
            raise typer.Exit(exc.exit_code) from None
