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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from include.errors import PipelineError
from include.kafka.errors import (
    ErrorKind,
    KafkaFatalError,
    KafkaUnavailable,
    ProducerFenced,
    TopicsMissing,
    TransactionAborted,
    classify,
    kafka_error,
)

log = logging.getLogger(__name__)

# Settings exactly-once depends on; they win over any configured value.
TRANSACTIONAL_SETTINGS = {"enable.idempotence": True, "acks": "all"}


@dataclass(frozen=True)
class TransactionPolicy:
    """How long one transactional call may take, and how often a retriable failure is retried."""

    call_timeout_s: float = 30.0
    init_timeout_s: float = 60.0
    attempts: int = 3
    # What close() waits for records outside a transaction (there are none in a clean run).
    close_timeout_s: float = 5.0


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
        self.config = {**kafka_config, **TRANSACTIONAL_SETTINGS, "transactional.id": transactional_id}
        self.client = client_factory(self.config)
        self._broken: ErrorKind | None = None

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
        """Wait for the open transaction's records to be acknowledged; the number still waiting after ``timeout``."""
        try:
            return self.client.flush(timeout)
        except KafkaException as exc:
            raise self.error_for("flush the transaction's records", exc) from None

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
