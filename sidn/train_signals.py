"""Stopping training cleanly: SIGTERM / SIGINT set a flag, the optimiser update is marked."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class StopFlag:
    """Signal handler that records a stop request; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name


@contextlib.contextmanager
def signal_guard(flag: StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread (e.g. Prefect workers)
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, flag)
        except (ValueError, OSError):  # pragma: no cover
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class UpdateGuard:
    """Marks the optimiser update: an interrupt inside it leaves an inconsistent state."""

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> None:
        self.active = True

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.active = False
