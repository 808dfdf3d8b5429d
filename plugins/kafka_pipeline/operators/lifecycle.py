"""What the long-running operators share: their durations as rendered, and their stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Stoppable(Protocol):
    def stop(self, reason: str) -> None: ...


def seconds(value: float | str | None) -> float | None:
    """A rendered duration: templates render to strings, and an empty one means no limit."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == "None":
        return None
    return float(value)


@contextmanager
def stop_on_sigterm(stoppable: Stoppable) -> Iterator[None]:
    """Stop ``stoppable`` on SIGTERM, then hand the signal to whoever handled it before.

    Airflow's task runner already turns SIGTERM into on_kill(); this covers runners that do not,
    and ``stop`` is idempotent when both fire.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        stoppable.stop("SIGTERM")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
