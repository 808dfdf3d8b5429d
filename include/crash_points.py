"""Crash points for the exactly-once tests: a process that SIGKILLs itself at a named phase.

The ingestion and the DLQ reprocessor call ``hook(phase, unit)`` at fixed points of each
transaction (``unit`` is the chunk or transaction number). Their command lines build the hook
from an environment variable ``<unit>:<phase>``, so a test can kill a real run exactly where a
lost worker would die - with no chance to clean up.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

PhaseHook = Callable[[str, int], None]

log = logging.getLogger(__name__)


def kill_hook_from_env(variable: str, phases: Sequence[str]) -> PhaseHook | None:
    """A phase hook that SIGKILLs this process at ``$variable`` = ``<unit>:<phase>``, or None when unset."""
    value = os.environ.get(variable)
    if not value:
        return None
    unit_text, _, phase = value.partition(":")
    if phase not in phases or not unit_text.isdigit():
        raise SystemExit(f"{variable} must be <number>:<phase> with phase one of {', '.join(phases)}, got {value!r}")
    target = int(unit_text)

    def hook(current_phase: str, unit: int) -> None:
        if unit == target and current_phase == phase:
            log.warning("%s=%s: killing this process now", variable, value)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook
