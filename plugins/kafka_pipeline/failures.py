"""The one place where the project's failures become Airflow's: permanent fails at once, retriable retries.

``include.errors`` gives every failure the project knows a kind; here each kind gets its Airflow
outcome, for every operator and TaskFlow task of every DAG:

* :class:`~include.errors.PermanentError` -> ``AirflowFailException``: the task fails now, with the
  error's one sentence, and its retries are skipped (no retry can fix bad input or config);
* :class:`~include.errors.RetriableError` -> ``AirflowException`` with the same sentence: this try
  fails and Airflow's retries (with their backoff) try again;
* anything else (a bug, a failure nobody has named yet) passes through untouched, with its
  traceback, and is retried like any task failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from include.errors import PermanentError, PipelineError, RetriableError

F = TypeVar("F", bound=Callable)


def task_failure(error: PipelineError) -> AirflowException:
    """The Airflow exception a project failure ends its task with."""
    if isinstance(error, PermanentError):
        return AirflowFailException(str(error))
    if isinstance(error, RetriableError):
        return AirflowException(str(error))
    raise TypeError(f"{type(error).__name__} is neither a PermanentError nor a RetriableError")


def fails_cleanly(function: F) -> F:
    """Run ``function`` (an ``execute`` or a ``@task`` body) with the project's failures mapped by :func:`task_failure`."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PipelineError as error:
            raise task_failure(error) from None

    return run  # type: ignore[return-value]
