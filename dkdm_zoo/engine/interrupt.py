"""Ctrl-C while a method sets up: finish the consistent part, save it, then stop."""

from __future__ import annotations

import sys
from typing import Any


class DeferredInterrupt:
    """While a method sets up (a pool initialisation can take hours), the first Ctrl-C asks it to
    stop at its next consistent point (``save_progress`` saves, then raises KeyboardInterrupt), so
    the finished part survives; a second Ctrl-C stops at once. Only in the main thread."""

    def __init__(self, enabled: bool = True):
        self.requested = 0.0
        self.enabled = enabled
        self._previous: Any = None

    def __enter__(self) -> DeferredInterrupt:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = 1.0
        if self.enabled:
            print(
                "interrupt: stopping at the next set-up checkpoint (Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
