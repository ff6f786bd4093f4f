"""Ctrl-C and SIGTERM during training: the first becomes a request to stop cleanly (the loop
saves a checkpoint at the end of the iteration), a second interrupts at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop saves a checkpoint at the end of the iteration."""

    signum: int | None = None


@contextlib.contextmanager
def catch_interrupts() -> Iterator[StopRequest]:
    """Turn the first Ctrl-C (or SIGTERM) into a request to stop cleanly; a second one
    interrupts at once (the previous handlers come back after the first)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.signum = signum
        signal.signal(signum, previous[signum])

    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        previous[sig] = old if old is not None else signal.SIG_DFL
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
