"""The transactional producer's life cycle, under one retry policy: the core of every exactly-once loop.

    producer = TransactionalProducer(kafka_config, "avazu-ingest/...", label="hour 14102100")
    producer.check_topics([...])      # one sentence for a missing topic
    producer.init()                   # fences an older instance with the same id, aborts its open transaction
    producer.begin(); producer.produce(...); producer.send_offsets(...); producer.commit()
    producer.close()

Each transactional call that fails with a *retriable* error is called again, up to
``policy.attempts`` times; any other failure becomes one of the project's errors, by
:func:`include.kafka.errors.classify`:

* abortable (``txn_requires_abort``): :class:`TransactionAborted` - the caller aborts and redoes
  the transaction's work;
* fenced: :class:`ProducerFenced`, naming the transactional id - a newer attempt owns it;
* fatal, or retriable calls that kept failing: :class:`KafkaFatalError` or :class:`KafkaUnavailable`.

Once fenced or fatal the client is unusable, so :meth:`close` does not flush it: the caller's
message stays the last word in the task log, not a second error from the dead client.

:class:`TransactionUnit` is the one exactly-once cycle every loop runs on that producer (the
ingestion's chunks, the stream processors' checkpoints, the DLQ reprocessor's batches)::

    unit = TransactionUnit(producer, on_abort=OnAbort.REWIND, consumer=consumer, phase_hook=hook)
    txn = unit.begin()                      # the open transaction, begun at its first record
    producer.produce(...); txn.consumed(topic, partition, offset); txn.counts["records_in"] += 1
    unit.commit()                           # consumed offsets + commit; counts join unit.committed

It owns begin / send offsets / commit / abort, what happens after an abort (:class:`OnAbort`, the
caller's choice), the counts of the open transaction (they count only once it commits) and the
crash points (``hook(phase, number)`` after begin, before commit, after commit).
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from include.crash_points import PhaseHook
from include.errors import PipelineError
from include.kafka.errors import (
    ErrorKind,
    KafkaFatalError,
    KafkaUnavailable,
    ProducerFenced,
    TooFewInSyncReplicas,
    TopicsMissing,
    TransactionAborted,
    classify,
    kafka_error,
)
from include.kafka.replicas import cluster_admin, find_replica_shortage, min_insync_replicas

log = logging.getLogger(__name__)

# Settings exactly-once depends on; they win over any configured value.
TRANSACTIONAL_SETTINGS = {"enable.idempotence": True, "acks": "all"}
# Defaults a configuration may override. A transaction begun right after the last one committed
# finds the coordinator still writing that one's markers: the broker answers
# CONCURRENT_TRANSACTIONS to its first AddPartitions/AddOffsets request, and librdkafka retries
# after retry.backoff.ms - 100 ms by default, which was a stream processor's p90 of
# send_offsets (measured: 99 ms at 200 events/s, 2 ms at the median). Kafka's Java producer
# retries those after 20 ms; so do we.
TRANSACTIONAL_DEFAULTS = {"retry.backoff.ms": 20}


@dataclass(frozen=True)
class TransactionPolicy:
    """How long one transactional call may take, and how often a retriable failure is retried."""

    call_timeout_s: float = 30.0
    init_timeout_s: float = 60.0
    attempts: int = 3
    # What close() waits for records outside a transaction (there are none in a clean run).
    close_timeout_s: float = 5.0
    # How long a flush waits for acknowledgements before it asks whether brokers are down.
    stall_check_s: float = 10.0


class TransactionalProducer:
    """One producer with a stable ``transactional.id`` (see the module doc).

    :param kafka_config: librdkafka settings (cluster, security, tuning, callbacks)
    :param transactional_id: stable per unit of work, so a retry fences its zombie
    :param label: what the producer works for, first in every message (e.g. ``hour 14102100``)
    """

    def __init__(self, kafka_config: dict[str, Any], transactional_id: str, *, label: str,
                 policy: TransactionPolicy = TransactionPolicy(),
                 client_factory: Callable[[dict[str, Any]], Producer] = Producer):
        self.transactional_id = transactional_id
        self.label = label
        self.policy = policy
        self.config = {**TRANSACTIONAL_DEFAULTS, **kafka_config, **TRANSACTIONAL_SETTINGS,
                       "transactional.id": transactional_id}
        self.client = client_factory(self.config)
        self._broken: ErrorKind | None = None
        # The topics this producer writes and their min.insync.replicas (check_topics, while the
        # cluster answers), where a stalled write looks for its cause.
        self.topics: list[str] = []
        self.min_insync: dict[str, int] | None = None

    # -- life cycle -------------------------------------------------------------------------

    def check_topics(self, topics: Sequence[str], timeout: float = 15.0) -> dict[str, int]:
        """The partition count of each topic; :class:`TopicsMissing` names those that do not exist.

        The broker does not create topics on use, and producing to a missing one would only fail
        at commit, minutes later. Asking for metadata first also has the connection up before
        ``init_transactions()``, which otherwise can wait for its first coordinator lookup.
        """
        servers = self.config.get("bootstrap.servers", "?")
        try:
            metadata = self.client.list_topics(timeout=timeout)
        except KafkaException as error:
            raise KafkaUnavailable(f"{self.label}: the broker at {servers} does not answer: {error.args[0]}") from None
        missing = [t for t in dict.fromkeys(topics) if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise TopicsMissing(f"{self.label}: topic(s) {', '.join(missing)} do not exist on the cluster at {servers}; "
                                "create them with the kafka_provisioning DAG first")
        self.topics = list(dict.fromkeys(topics))
        if len(metadata.brokers) > 1:
            # Only a cluster can lose in-sync replicas; one broker down is simply unreachable.
            self.min_insync = min_insync_replicas(cluster_admin(self.config), self.topics, timeout)
        return {t: len(metadata.topics[t].partitions) for t in topics}

    def init(self) -> None:
        """Fence older instances of this transactional id and abort what they left open."""
        self._call("initialise transactions", self.client.init_transactions, self.policy.init_timeout_s)

    def begin(self) -> None:
        self._call("begin a transaction", self.client.begin_transaction)

    def send_offsets(self, positions: list[TopicPartition], group_metadata: Any) -> None:
        """Add the consumed offsets to the open transaction (consume-transform-produce)."""
        self._call("send the consumed offsets", self.client.send_offsets_to_transaction, positions,
                   group_metadata, self.policy.call_timeout_s)

    def commit(self) -> None:
        """Commit the open transaction; a failure that needs an abort raises :class:`TransactionAborted`."""
        self._call("commit", self.client.commit_transaction, self.policy.call_timeout_s)

    def abort(self) -> None:
        """Abort the open transaction: nothing of it becomes visible."""
        self._call("abort", self.client.abort_transaction, self.policy.call_timeout_s)

    def abort_quietly(self) -> bool:
        """Abort on the way out of a failure; False (logged) when even that failed.

        The transaction is abandoned either way: the broker aborts it at ``transaction.timeout.ms``,
        or the next instance with this id does in :meth:`init`.
        """
        if self._broken is not None:
            return False
        try:
            self.abort()
            return True
        except PipelineError as error:
            log.warning("%s: the open transaction could not be aborted (%s); the next attempt aborts it", self.label, error)
            return False

    def close(self) -> None:
        """Serve what is left of the delivery reports; a fenced or failed client is left alone."""
        if self._broken is not None:
            return
        try:
            left = self.client.flush(self.policy.close_timeout_s)
        except KafkaException as error:
            log.warning("%s: closing the producer: %s", self.label, error.args[0])
            return
        if left:
            log.warning("%s: %d record(s) outside any transaction were not delivered at close", self.label, left)

    # -- producing --------------------------------------------------------------------------

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        """``produce()``; while librdkafka's queue is full, serve it until there is room (it drains as batches are acked)."""
        kwargs: dict[str, Any] = {"headers": headers} if headers else {}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.client.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:
                self.client.poll(0.05)

    def flush(self, timeout: float) -> int:
        """Wait for the open transaction's records to be acknowledged; the number still waiting after ``timeout``.

        Every ``policy.stall_check_s`` without the last acknowledgement, the brokers under
        :attr:`topics` are looked at: with too few of them answering, :class:`TooFewInSyncReplicas`
        says so at once instead of after the whole timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                remaining = self.client.flush(max(0.0, min(deadline - time.monotonic(), self.policy.stall_check_s)))
            except KafkaException as exc:
                raise self.error_for("flush the transaction's records", exc) from None
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining
            shortage = self.replica_shortage()
            if shortage is not None:
                raise shortage

    def replica_shortage(self) -> TooFewInSyncReplicas | None:
        """The error to stop with when a failed call's cause is brokers down under :attr:`topics`, else None.

        The open transaction is given up, not aborted: aborting needs the same brokers. The next
        ``init()`` with this transactional id aborts it once they are back.
        """
        if self.min_insync is None:  # one broker, or topics never checked: no replicas to lose
            return None
        # A client of its own: this producer's may still wait on a connection to a dead broker.
        shortage = find_replica_shortage(self.config, self.topics, self.min_insync)
        if shortage is None:
            return None
        self._broken = ErrorKind.RETRIABLE
        return TooFewInSyncReplicas(f"{self.label}: {shortage.sentence()}; a retry resumes from the last commit "
                                    f"(transactional.id {self.transactional_id})")

    def error_for(self, action: str, exc: KafkaException) -> PipelineError:
        """The project's error for a KafkaException raised by a direct call on :attr:`client` (e.g. a hot-path produce)."""
        error = kafka_error(exc)
        if error is None:
            return KafkaFatalError(f"{self.label}: {action} failed: {exc}")
        return self._failure(action, error, classify(error), 1)

    # -- one call under the policy ----------------------------------------------------------

    def _call(self, action: str, call: Callable[..., Any], *args: Any) -> Any:
        attempts = self.policy.attempts
        for attempt in range(1, attempts + 1):
            try:
                return call(*args)
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None:
                    raise
                kind = classify(error)
                if kind is ErrorKind.RETRIABLE:
                    # A call that timed out with brokers down would time out again: say why now.
                    shortage = self.replica_shortage()
                    if shortage is not None:
                        raise shortage from None
                if kind is ErrorKind.RETRIABLE and attempt < attempts:
                    log.warning("%s: %s failed (attempt %d of %d), trying again: %s", self.label, action, attempt,
                                attempts, error)
                    continue
                raise self._failure(action, error, kind, attempt) from None
        raise AssertionError("unreachable")

    def _failure(self, action: str, error, kind: ErrorKind, attempts: int) -> PipelineError:
        tid = self.transactional_id
        if kind is ErrorKind.FENCED:
            self._broken = kind
            return ProducerFenced(
                f"{self.label}: fenced while trying to {action}: another instance with transactional.id {tid} "
                "has started (a newer attempt took over); this one stops and its open transaction is discarded")
        if kind is ErrorKind.ABORTABLE:
            return TransactionAborted(f"{self.label}: the transaction had to be aborted when trying to {action}: {error}")
        if kind is ErrorKind.RETRIABLE:
            return KafkaUnavailable(f"{self.label}: could not {action} in {attempts} tries "
                                    f"(transactional.id {tid}): {error}")
        if error.fatal():
            self._broken = kind
        return KafkaFatalError(f"{self.label}: fatal error while trying to {action} (transactional.id {tid}): {error}")


# The unit's crash points: the exactly-once tests kill a real process at each of them.
PHASE_AFTER_BEGIN = "after_begin"
PHASE_BEFORE_COMMIT = "before_commit"
PHASE_AFTER_COMMIT = "after_commit"
UNIT_PHASES = (PHASE_AFTER_BEGIN, PHASE_BEFORE_COMMIT, PHASE_AFTER_COMMIT)
# What aborts a transaction without ending the producer: the abortable, and retriable calls that kept failing.
_ABORTABLE = (TransactionAborted, KafkaUnavailable)


class OnAbort(enum.Enum):
    """What a :class:`TransactionUnit` does once it had to abort the open transaction."""

    # Produce the same work again (:meth:`TransactionUnit.run`), up to ``max_attempts`` times: the
    # input can be read again, as the ingestion's chunk of a staged file.
    REDO = "redo"
    # Hand back (``commit()`` is False): the caller re-reads its input from the committed offsets
    # and carries on, as a stream processor that must not stop.
    REWIND = "rewind"
    # Raise :class:`TransactionAborted`: the task's retry redoes the run, as DLQ reprocessing.
    RAISE = "raise"


@dataclass
class OpenTransaction:
    """The work of the open transaction, kept apart until it commits.

    ``counts`` join :attr:`TransactionUnit.committed` at the commit (an aborted transaction counts
    nothing); ``offsets`` are the next offsets to read of the partitions it consumed, sent with the
    commit; ``payload`` is whatever the caller keeps with it (the records to archive ...).
    """

    number: int
    began: float
    counts: Counter = field(default_factory=Counter)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    payload: Any = None

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        """The record at ``offset`` is handled: the commit moves the group past it."""
        key = (topic, partition)
        self.first_offsets.setdefault(key, offset)
        self.offsets[key] = offset + 1


class TransactionUnit:
    """One exactly-once cycle on a :class:`TransactionalProducer` (see the module doc).

    :param producer: initialised by the caller (``init()``), closed by the caller
    :param on_abort: what follows an aborted transaction (:class:`OnAbort`)
    :param consumer: the consumer whose group the consumed offsets are committed for, if any
    :param phase_hook: called as ``hook(phase, number)`` at each of :data:`UNIT_PHASES`
    :param before_commit: called with the open transaction just before its offsets and commit
        (a last record, an archive written before the commit ...); it may raise an abortable error
    :param max_attempts: how often :meth:`run` produces the same work (``OnAbort.REDO``)
    :param noun: what one transaction holds, in messages (``chunk``, ``checkpoint`` ...)
    """

    def __init__(self, producer: TransactionalProducer, *, on_abort: OnAbort, consumer: Any = None,
                 phase_hook: PhaseHook | None = None,
                 before_commit: Callable[[OpenTransaction], None] | None = None, max_attempts: int = 1,
                 noun: str = "transaction"):
        self.producer = producer
        self.on_abort = on_abort
        self.consumer = consumer
        self.phase_hook = phase_hook or (lambda phase, number: None)
        self.before_commit = before_commit
        self.max_attempts = max_attempts
        self.noun = noun
        self.last_error: Exception | None = None
        self.open: OpenTransaction | None = None
        self.committed: Counter = Counter()
        self.transactions = 0
        self.aborted = 0
        # Seconds spent committing (before_commit, offsets, commit), for the callers' profiles.
        self.seconds_committing = 0.0
        self._numbers = 0

    def begin(self, number: int | None = None) -> OpenTransaction:
        """The open transaction; one is begun when none is open (``number``: the caller's, else counted)."""
        if self.open is None:
            self._numbers += 1
            self.producer.begin()
            self.open = OpenTransaction(self._numbers if number is None else number, time.monotonic())
            self.phase_hook(PHASE_AFTER_BEGIN, self.open.number)
        return self.open

    def commit(self) -> bool:
        """Commit the open transaction with its consumed offsets (True; also when none is open).

        When it has to abort: ``REDO`` and ``REWIND`` return False, ``RAISE`` raises
        :class:`TransactionAborted`. Fenced and fatal errors are never caught: they end the unit.
        """
        txn = self.open
        if txn is None:
            return True
        began = time.monotonic()
        try:
            if self.before_commit is not None:
                self.before_commit(txn)
            if txn.offsets and self.consumer is not None:
                positions = [TopicPartition(t, p, offset) for (t, p), offset in txn.offsets.items()]
                self.producer.send_offsets(positions, self.consumer.consumer_group_metadata())
            self.phase_hook(PHASE_BEFORE_COMMIT, txn.number)
            self.producer.commit()
        except _ABORTABLE as error:
            self._stop_if_replicas_short(error)
            self.abort()
            self.last_error = error
            if self.on_abort is OnAbort.RAISE:
                raise TransactionAborted(f"{self.producer.label}: {self.noun} {txn.number} was aborted ({error}); "
                                         "nothing of it is visible, a retry redoes it") from None
            if self.on_abort is OnAbort.REWIND:
                log.warning("%s: %s %s aborted, re-reading its input: %s", self.producer.label, self.noun,
                            txn.number, error)
            return False
        except BaseException:
            self.abort_quietly()
            raise
        finally:
            self.seconds_committing += time.monotonic() - began
        self.open = None
        self.transactions += 1
        self.committed.update(txn.counts)
        self.phase_hook(PHASE_AFTER_COMMIT, txn.number)
        return True

    def run(self, work: Callable[[OpenTransaction], None], number: int | None = None) -> OpenTransaction:
        """``OnAbort.REDO``: begin, ``work(txn)``, commit; an aborted attempt is done again from the start.

        After ``max_attempts`` aborted attempts, :class:`TransactionAborted` says so (nothing of the
        work is visible, a retry of the task resumes there). Any other failure aborts and is raised.
        """
        for attempt in range(1, self.max_attempts + 1):
            txn = self.begin(number)
            try:
                work(txn)
            except _ABORTABLE as error:
                self._stop_if_replicas_short(error)
                self.abort()
                self.last_error = error
            except BaseException:
                self.abort_quietly()
                raise
            else:
                if self.commit():
                    return txn
            if attempt < self.max_attempts:
                log.warning("%s: %s %s attempt %s of %s aborted (%s); producing it again",
                            self.producer.label, self.noun, txn.number, attempt, self.max_attempts, self.last_error)
        raise TransactionAborted(f"{self.producer.label}: {self.noun} {txn.number} was aborted {self.max_attempts} "
                                 f"time(s), last: {self.last_error}; nothing of it is visible, a retry resumes there")

    def _stop_if_replicas_short(self, error: Exception) -> None:
        """Raise :class:`TooFewInSyncReplicas` when the failure is brokers down (no abort, no redo: both would wait)."""
        if isinstance(error, TooFewInSyncReplicas):
            shortage: TooFewInSyncReplicas | None = error
        else:
            shortage = self.producer.replica_shortage()
        if shortage is None:
            return
        self.open = None
        raise shortage from error

    def abort(self) -> None:
        """Abort the open transaction: nothing of it becomes visible, and its counts are dropped."""
        if self.open is None:
            return
        self.open = None
        self.aborted += 1
        self.producer.abort()

    def abort_quietly(self) -> None:
        """Abort on the way out of a failure (see :meth:`TransactionalProducer.abort_quietly`)."""
        if self.open is None:
            return
        self.open = None
        if self.producer.abort_quietly():
            self.aborted += 1
