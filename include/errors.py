"""The one rule for the project's own failures: each is permanent or retriable, by its type.

Every exception the project raises on purpose derives from :class:`PermanentError` or
:class:`RetriableError`, and its message is the one sentence a person needs (what, where, what
to do). Callers never decide with ``except`` lists whether a failure deserves another try; the
Airflow operators map the two kinds in one place (``kafka_pipeline.failures``): a permanent error
fails the task at once, without retries, a retriable one fails this try and leaves the retries to
Airflow.

* permanent: a retry would fail the same way - bad configuration, bad input, a missing source or
  missing credentials, an unregistered or incompatible schema, a missing topic, a codec that is not
  installed, a producer fenced by a newer attempt, counts that do not reconcile;
* retriable: the same call may pass later - a broker, registry or S3 endpoint that does not
  answer, a timeout, a transaction that kept aborting.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the project knows; ``str(error)`` is its one-sentence message."""

    retriable: bool = False


class PermanentError(PipelineError):
    """Retrying cannot help: the input, the configuration or the cluster's state must change first."""

    retriable = False


class RetriableError(PipelineError):
    """A service did not answer or a call timed out; the same work may pass on another try."""

    retriable = True
