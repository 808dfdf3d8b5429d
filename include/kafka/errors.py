"""What a librdkafka error means for the caller, and the project's Kafka failures.

librdkafka marks each error it raises: ``fatal()`` (the client instance is unusable),
``txn_requires_abort()`` (the open transaction must be aborted, then the work can be redone) and
``retriable()`` (the same call may pass). :func:`classify` turns those flags into one
:class:`ErrorKind`; fencing is told apart from other fatal errors because it has a cause the
operator can act on: a newer attempt with the same ``transactional.id`` took over.
"""

from __future__ import annotations

import enum

from confluent_kafka import KafkaError, KafkaException

from include.errors import PermanentError, RetriableError

# The codes a producer gets once a newer instance with its transactional id has started.
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class ErrorKind(enum.Enum):
    """How to go on after a Kafka client error."""

    RETRIABLE = "retriable"  # call again
    ABORTABLE = "abortable"  # abort the open transaction, then redo its work
    FENCED = "fenced"  # a newer attempt owns the transactional id: stop, nothing to redo here
    FATAL = "fatal"  # the client cannot go on


def kafka_error(error: BaseException) -> KafkaError | None:
    """The KafkaError a KafkaException carries, or None."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


def classify(error: KafkaError) -> ErrorKind:
    """The :class:`ErrorKind` of a librdkafka error (fenced before fatal: fencing is also fatal)."""
    if error.code() in FENCED_CODES:
        return ErrorKind.FENCED
    if error.fatal():
        return ErrorKind.FATAL
    if error.txn_requires_abort():
        return ErrorKind.ABORTABLE
    if error.retriable():
        return ErrorKind.RETRIABLE
    return ErrorKind.FATAL


class TopicsMissing(PermanentError):
    """A topic the work reads or writes does not exist; topic provisioning creates it."""


class ProducerFenced(PermanentError):
    """A newer attempt with the same transactional id has started; this one must stop."""


class KafkaFatalError(PermanentError):
    """The Kafka client hit an error it cannot recover from; the message names the call and the error."""


class KafkaUnavailable(RetriableError):
    """The broker did not answer, or a call kept timing out; another try may pass."""


class TooFewInSyncReplicas(KafkaUnavailable):
    """Brokers holding the replicas are down: acks=all writes wait until they return.

    The open transaction is left to the next attempt's ``init()`` (aborting it needs those
    brokers too); a retry of the task resumes from the last commit.
    """


class TransactionAborted(RetriableError):
    """The open transaction had to be aborted; nothing of it is visible and its work can be redone."""
