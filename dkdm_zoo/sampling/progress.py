"""Progress bars, written once: sampling, pool initialisation, generated datasets and training draw
their bars with these (rich); the caller decides whether a bar shows (main process, not --quiet)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Advance = Callable[[int], None]


def new_progress(*extra_columns: Any, transient: bool = False) -> Any:
    """A rich ``Progress`` with the columns every bar here shows: description, bar, n/total, ETA
    (``extra_columns`` go before the ETA)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeRemainingColumn(),
        transient=transient,
    )


@contextlib.contextmanager
def progress_bar(
    total: int, description: str, *, enabled: bool, transient: bool = False
) -> Iterator[Advance]:
    """A bar over ``total`` units while the block runs; yields ``advance(k)`` (a no-op when disabled)."""
    if not enabled or total <= 0:
        yield lambda k=1: None
        return
    with new_progress(transient=transient) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k=1: bar.advance(task, k)
