"""Waiting in tests for something a real service does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, interval: float = 1.0) -> T:
    """``check()``'s first truthy answer; the test fails, saying ``what`` did not happen, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)
