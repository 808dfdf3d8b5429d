"""Read topics to their end, as they are now: the one loop behind checkpoints, checks and reports.

The end of a partition is its end-of-partition event (``enable.partition.eof``), which also
comes when the last offsets are transaction markers that deliver no record; with
``read_committed`` it is the last stable offset, so the records of a transaction still open are
not read. An end below the high watermark is one of two things: a transaction still open, or one
that has just been committed or aborted. ``commit_transaction()`` returns once the coordinator has
logged the commit, before the markers reach the partitions, so a read right after a commit sees
the old last stable offset (measured here: still 0 of 5 records just after the commit, 6 of 6 a
moment later). Such a partition is read on for up to :data:`OPEN_TRANSACTION_WAIT_S`; what is
still open then is left unread. Two ways to start:

* from the start (``from_committed=False``): the consumer is assigned every partition at its low
  watermark; no group offsets are read or committed (checkpoints, whole-topic checks);
* from the group's committed offsets (``from_committed=True``): the consumer subscribes, and its
  offsets are committed once the caller has taken every record, so the next read of the same
  group covers only what came after (the stream pipelines' final consumers).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from include.errors import RetriableError
from include.kafka.errors import KafkaFatalError, KafkaUnavailable, TopicsMissing, kafka_error

log = logging.getLogger(__name__)

# The consumer settings the loop depends on; the cluster's settings and a group id go beside them.
READER_SETTINGS = {
    "isolation.level": "read_committed",
    "enable.partition.eof": True,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    # The end of a partition shows as an empty fetch; do not let the broker hold it for 500 ms.
    "fetch.wait.max.ms": 10,
    # A read to the end drains the local queue as fast as it can: once the queue is over its
    # thresholds, fetch again after 10 ms, not librdkafka's 1 s. Measured on 6M records of the raw
    # topic: 143k records/s (the fetcher idle a quarter of the time) -> 258k, peak RSS 174 -> 188 MB.
    "fetch.queue.backoff.ms": 10,
}


# How long a partition whose end is below its high watermark is read on for the markers of a
# transaction just ended (see the module doc); a transaction still open after that is left unread.
OPEN_TRANSACTION_WAIT_S = 2.0


class ReadTimedOut(RetriableError):
    """The topics could not be read to their end in time; the message names the partitions left."""


def reader_config(kafka_config: dict[str, Any], group_id: str, *, committed_only: bool = True) -> dict[str, Any]:
    """Consumer settings for :func:`read_to_end`: the cluster's, a group id, and :data:`READER_SETTINGS`.

    ``committed_only=False`` reads as ``read_uncommitted``: records of aborted transactions too.
    """
    isolation = "read_committed" if committed_only else "read_uncommitted"
    return {**kafka_config, **READER_SETTINGS, "group.id": group_id, "isolation.level": isolation}


def read_to_end(consumer: Consumer, topics: list[str], *, from_committed: bool = False, commit: bool = True,
                timeout: float = 60.0, batch: int = 1000, since_ms: int | None = None) -> Iterator[Message]:
    """Yield every record up to the end of each partition of ``topics``, one at a time: the records of
    :func:`read_batches_to_end` (which says what the arguments do and what it raises)."""
    for records in read_batches_to_end(consumer, topics, from_committed=from_committed, commit=commit,
                                       timeout=timeout, batch=batch, since_ms=since_ms):
        yield from records


def read_batches_to_end(consumer: Consumer, topics: list[str], *, from_committed: bool = False, commit: bool = True,
                        timeout: float = 60.0, batch: int = 1000,
                        since_ms: int | None = None) -> Iterator[list[Message]]:
    """Yield every record up to the end of each partition of ``topics`` (see the module doc), in lists
    of at most ``batch`` in the order consumed: for a caller that counts millions, a list at a time.

    Create ``consumer`` with :func:`reader_config`. ``commit=False`` leaves the offsets of a
    ``from_committed`` read to the caller (a transaction sends them with its output). ``since_ms``
    starts a read from the start at the first record with a timestamp at or after it. Raises :class:`ReadTimedOut` naming the
    partitions not read to their end, :class:`TopicsMissing` for a topic that does not exist and
    :class:`KafkaFatalError` for a fatal consumer error; other consumer errors are retried by the
    client and logged.
    """
    pending: set[tuple[str, int]] = set()
    known = False  # whether `pending` holds the whole assignment yet

    if from_committed:
        def on_assign(_consumer, partitions):
            nonlocal known
            pending.update((tp.topic, tp.partition) for tp in partitions)
            known = True

        consumer.subscribe(topics, on_assign=on_assign)
    else:
        assignment = _from_low_watermarks(consumer, topics, since_ms)
        pending.update((tp.topic, tp.partition) for tp in assignment)
        known = True
        if not assignment:
            return
        consumer.assign(assignment)
    deadline = time.monotonic() + timeout
    # Partitions at their end but below their high watermark: since when, at which high watermark.
    short: dict[tuple[str, int], tuple[float, int]] = {}
    # Partitions taken out of `pending` (at their end): a record of one puts it back.
    ended: set[tuple[str, int]] = set()

    def took(key: tuple[str, int]) -> None:
        """A record of partition ``key``: not at its end after all (a record after its end-of-partition event)."""
        pending.add(key)
        short.pop(key, None)
        ended.discard(key)

    read = 0
    try:
        while not known or pending:
            now = time.monotonic()
            if now > deadline:
                left = ", ".join(f"{t}[{p}]" for t, p in sorted(pending)) or "no partition assigned yet"
                raise ReadTimedOut(f"reading {', '.join(topics)} to the end took longer than {timeout:.0f} s "
                                   f"(not read to the end: {left})")
            for key in [key for key, (since, _) in short.items() if now - since > OPEN_TRANSACTION_WAIT_S]:
                log.info("%s[%d]: the records before offset %d are in a transaction still open after %.0f s; not read",
                         *key, short.pop(key)[1], OPEN_TRANSACTION_WAIT_S)
                pending.discard(key)
                ended.add(key)
            # A short timeout once assigned: consume() waits that long whenever fewer records than
            # asked are left, which is every time near the end of a partition.
            messages = consumer.consume(num_messages=batch, timeout=0.02 if known else 0.5)
            records = [message for message in messages if message.error() is None]
            if len(records) == len(messages):
                # Records only (nearly every batch): their partitions matter only once one has ended.
                if short or ended:
                    for key in {(message.topic(), message.partition()) for message in records}:
                        took(key)
            else:
                # Events among them: taken in order, since a record after an end event undoes it.
                for message in messages:
                    error = message.error()
                    if error is None:
                        took((message.topic(), message.partition()))
                    elif error.code() == KafkaError._PARTITION_EOF:
                        key = (message.topic(), message.partition())
                        _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                        if message.offset() >= high:
                            short.pop(key, None)
                            pending.discard(key)
                            ended.add(key)
                        else:
                            short.setdefault(key, (now, high))
                    elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise TopicsMissing(f"cannot read {', '.join(topics)}: {error.str()}")
                    elif error.fatal():
                        raise KafkaFatalError(f"the consumer reading {', '.join(topics)} failed: {error.str()}")
                    else:
                        log.warning("consumer error while reading %s (the client retries): %s",
                                    ", ".join(topics), error)
            if records:
                read += len(records)
                yield records
        if from_committed and commit and read:
            _commit(consumer)
    finally:
        if not from_committed:
            consumer.unassign()


def _from_low_watermarks(consumer: Consumer, topics: list[str], since_ms: int | None = None) -> list[TopicPartition]:
    """Every partition of ``topics`` at its low watermark, or at its first record since ``since_ms``.

    A read_committed consumer is told the last stable offset as the end, which lags a transaction
    just committed: every partition is read, an empty-looking one too, and one without a record
    since ``since_ms`` yet from that end on (a transaction committing now is still read).
    """
    assignment, ends = [], {}
    for topic in topics:
        try:
            described = consumer.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as error:
            raise KafkaUnavailable(f"the broker did not describe topic {topic}: {error.args[0]}") from None
        if described is None or described.error is not None:
            raise TopicsMissing(f"topic {topic} does not exist"
                                + (f" ({described.error.str()})" if described is not None else ""))
        for partition in sorted(described.partitions):
            low, end = _watermarks(consumer, TopicPartition(topic, partition))
            assignment.append(TopicPartition(topic, partition, low))
            ends[topic, partition] = end
    if since_ms is not None and assignment:
        try:
            found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, since_ms) for tp in assignment],
                                               timeout=10)
        except KafkaException as error:
            raise KafkaUnavailable(f"the broker did not look up offsets by time in {', '.join(topics)}: "
                                   f"{error.args[0]}") from None
        # -1: no committed record that recent.
        assignment = [tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, ends[tp.topic, tp.partition])
                      for tp in found]
    return assignment


# What a partition answers while its leader is still being elected: a topic created a moment ago,
# or a broker that just moved its leadership. Asked again, it answers.
_LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                            KafkaError.UNKNOWN_TOPIC_OR_PART})


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """The partition's low and high watermarks, asked again while its leader is being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)
        except KafkaException as error:
            kafka = kafka_error(error)
            moving = kafka is not None and kafka.code() in _LEADER_MOVING
            if moving and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            failure = KafkaUnavailable if moving or (kafka is not None and kafka.retriable()) else KafkaFatalError
            raise failure(f"the broker did not give the offsets of {tp.topic}[{tp.partition}]: {error.args[0]}") from None


def _commit(consumer: Consumer) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as error:
        # _NO_OFFSET: nothing new to commit.
        if error.args[0].code() != KafkaError._NO_OFFSET:
            raise KafkaUnavailable(f"committing the offsets read failed: {error.args[0]}") from None


@dataclass(frozen=True)
class StoredRecord:
    """One record as a consumer sees it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_topic(kafka_config: dict[str, Any], topic: str, *, committed_only: bool = True,
               timeout: float = 120.0) -> list[StoredRecord]:
    """Every record a consumer sees in ``topic`` now, partition by partition (for checks and reports)."""
    consumer = Consumer(reader_config(kafka_config, f"read-topic-{uuid.uuid4().hex}", committed_only=committed_only))
    try:
        return [StoredRecord(m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()))
                for m in read_to_end(consumer, [topic], timeout=timeout, batch=10_000)]
    finally:
        consumer.close()
