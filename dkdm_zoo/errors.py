"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input: printed as one line, no traceback, exit code 2."""


class UnknownNameError(UserError, KeyError):
    """A registry name that does not exist; the message lists the closest known names.

    ``cause`` replaces that list when the reason is known (a plugin that would provide the name
    failed to load); ``note`` is appended (some plugin failed to load and might provide it).
    """

    def __init__(
        self, kind: str, name: str, known: Iterable[str], *, cause: str | None = None, note: str = ""
    ):
        self.kind, self.name = kind, name
        what = f"unknown {kind[:-1] if kind.endswith('s') else kind} '{name}'"
        if cause is not None:
            super().__init__(f"{what}: {cause}")
            return
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"known {kind}: {', '.join(known) or 'none'}"
        )
        listable = kind in ("teachers", "students", "methods", "recipes")
        see = f" (see `dkdm-zoo list {kind}`)" if listable else " (see `dkdm-zoo list`)"
        super().__init__(f"{what}: {hint}{see}" + (f"; {note}" if note else ""))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class IncompatibleError(UserError):
    """A teacher/student/method combination that cannot work, refused before any training."""


class PluginError(Exception):
    """A plugin that failed to import or register (raised only in strict mode)."""
