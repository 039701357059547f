"""The training progress bars: the step bar (last logged loss, samples/s, ETA) and side bars for
work that interrupts training (previews), on the main process only."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

from dkdm_zoo.sampling.progress import new_progress


class TrainingProgress:
    """A rich bar with step, loss, samples/s and ETA (main process, not quiet), and bars for side work."""

    def __init__(self, *, enabled: bool, total: int, start: int):
        self.bar = None
        self.loss, self.rate = math.nan, 0.0
        if enabled:
            from rich.progress import TextColumn

            self.bar = new_progress(TextColumn("{task.fields[info]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    @contextlib.contextmanager
    def side_task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A second bar under the training bar while other work runs (previews); yields ``advance(k)``."""
        if self.bar is None:
            yield lambda k=1: None
            return
        task = self.bar.add_task(description, total=total, info="")
        try:
            yield lambda k=1: self.bar.advance(task, k)
        finally:
            self.bar.remove_task(task)

    def update(self, step: int, rate: float) -> None:
        if self.bar is not None:
            self.rate = rate
            self.bar.update(self.task, completed=step, info=self.info())

    def show_loss(self, loss: float) -> None:
        self.loss = loss
        if self.bar is not None:
            self.bar.update(self.task, info=self.info())

    def info(self) -> str:
        """The bar's text: no loss until the first log window has read one (never "loss nan")."""
        loss = f"loss {self.loss:.4f}  " if math.isfinite(self.loss) else ""
        return f"{loss}{self.rate:.1f} samples/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
