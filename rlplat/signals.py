"""SIGINT and SIGTERM during training: stop at the end of a loop iteration, checkpoint, and
say how to resume (rlplat/train.py); `rlplat` exits with 128 + the signal number."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM; `rlplat` exits with 128 + the signal number.
    `reported`: the loop checkpointed and printed the resume command."""

    def __init__(self, signum: int, reported: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.reported = signum, reported


class StopOnSignals:
    """SIGINT (Ctrl-C) and SIGTERM alike. While the loop is `armed`, the first one asks it
    to stop at the end of its iteration (so the checkpoint is consistent) and a second one
    interrupts at once; outside the loop (start-up, final eval) one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._armed = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """Take (or take back) both signals; only the main thread may."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            old = signal.signal(signum, self._handle)
            self._old.setdefault(signum, old)

    def restore(self) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    @contextlib.contextmanager
    def armed(self) -> Iterator[StopOnSignals]:
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self._armed and self.requested is None:
            self.requested = signum
            return
        raise Interrupted(signum)
