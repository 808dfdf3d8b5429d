"""A long-running consume-transform-produce loop, exactly once for ``read_committed`` readers.

Life cycle (in the spirit of Quix Streams' application and confluent-kafka's EOS example)::

    processor = StreamProcessor(name, transform, client_config, input_topics, output_topic, ...)
    counts = processor.run(max_runtime=3600, idle_timeout=None)   # blocks; stop() from elsewhere

``run`` subscribes, then repeats: consume a batch, transform each record, produce the results
(or the dead-letter copy of a record whose transform raised), and commit a checkpoint once
nothing fetched waits behind the batch (the input is drained), or at the latest after
``commit_interval`` seconds or ``commit_every`` records: under a backlog a checkpoint carries full
batches, under a light load a record is visible about one commit after it arrived, and at any
load the checkpoints grow with the records that arrive while one commits. A checkpoint is one
Kafka transaction holding the produced records
*and* the input offsets of the records handled, so both become visible together or not at all:
a crash (even SIGKILL) loses nothing and, for readers with ``isolation.level=read_committed``,
duplicates nothing - the restarted instance aborts the dead one's open transaction
(``init_transactions`` with the same ``transactional.id``) and resumes from the committed offsets.

Each instance has a stable id; ``<group>-<instance>`` is both its ``transactional.id`` (fencing its
zombie) and its static ``group.instance.id`` (a restart takes its partitions back at once instead of
waiting for the old member's session to time out). A rebalance commits the open checkpoint in
``on_revoke``, so the partitions move with their output committed.

The transactional producer's life cycle and its retry policy are
:class:`include.kafka.transactions.TransactionalProducer`'s, and each checkpoint is a transaction of
its :class:`include.kafka.transactions.TransactionUnit` (``OnAbort.REWIND``: an aborted checkpoint
is dropped, the partitions are sought back to their committed offsets and the loop carries on),
the same cycle as the ingestion's and the DLQ reprocessor's. No
Airflow here: the operator in plugins/ and the ``python -m include.streaming`` runner both drive
this object.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from include.dead_letters import dead_letter_record_headers
from include.errors import PermanentError
from include.kafka.errors import KafkaUnavailable
from include.kafka.transactions import OnAbort, TransactionalProducer, TransactionPolicy, TransactionUnit
from include.streaming.records import InputRecord, OutputRecord, Transform

log = logging.getLogger(__name__)

# Each transactional call (init, send offsets, commit, abort) may take 30 s; a retriable error
# (timeout, coordinator moving) is retried three times. The broker-side transaction timeout
# (transaction.timeout.ms, 60 s below) must be larger.
TRANSACTIONS = TransactionPolicy(call_timeout_s=30.0, init_timeout_s=30.0, attempts=3)


class ProcessorFailed(PermanentError):
    """The processor cannot go on (a fatal consumer error, a transform that does not fit its topics)."""


@dataclass
class ProcessorCounts:
    """What one run did. Only committed work is counted: an aborted checkpoint is redone later."""

    processor: str
    records_in: int = 0
    records_out: int = 0
    dead_lettered: int = 0
    # Failed records dropped because the processor has no DLQ topic (logged one by one).
    skipped: int = 0
    transactions: int = 0
    aborted_transactions: int = 0
    rebalances: int = 0
    consumer_errors: int = 0
    seconds: float = 0.0
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The counts a checkpoint keeps (in its OpenTransaction) and the run adds up once it commits.
_COUNTED = ("records_in", "records_out", "dead_lettered", "skipped")


@dataclass
class StreamProcessor:
    """One instance of a named stream processor; see the module docstring for its life cycle.

    ``client_config`` holds the librdkafka settings of the cluster (bootstrap servers, security);
    the settings exactly-once depends on are set here and win over overrides. With
    ``dead_letter_notice`` set, that line is logged verbatim once per dead-lettered record, with
    ``{dlq_topic}`` in it replaced by the DLQ topic's name.
    """

    name: str
    transform: Transform
    client_config: dict[str, Any]
    input_topics: Sequence[str]
    output_topic: str
    group_id: str
    dlq_topic: str | None = None
    instance_id: str = "0"
    batch_size: int = 500
    poll_timeout: float = 0.5
    commit_interval: float = 0.1
    commit_every: int = 10_000
    progress_interval: float = 30.0
    dead_letter_notice: str | None = None
    producer_overrides: dict[str, Any] = field(default_factory=dict)
    consumer_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_topics = list(self.input_topics)
        if not self.input_topics:
            raise ValueError(f"processor {self.name} has no input topics")
        self.counts = ProcessorCounts(self.name)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._producer: TransactionalProducer | None = None
        self._consumer: Consumer | None = None
        self._unit: TransactionUnit | None = None
        self._assigned: dict[tuple[str, int], TopicPartition] = {}
        self._partition_counts: dict[str, int] = {}
        self._start_offsets: dict[tuple[str, int], int] = {}
        # When the last record came or partitions were assigned; None until then, so an instance
        # still waiting for its first assignment is not "idle".
        self._last_activity: float | None = None
        self._last_progress = time.monotonic()
        self._records_in_at_last_progress = 0

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences the one it replaces."""
        return f"{self.group_id}-{self.instance_id}"

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish its batch, commit and close. Safe from signal handlers and threads."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this instance holds now."""
        return sorted(self._assigned)

    def run(self, max_runtime: float | None = None,
            idle_timeout: float | None = None) -> ProcessorCounts:
        """Process until stop(), ``max_runtime`` seconds, or ``idle_timeout`` seconds without records.

        The idle clock starts at the first assignment: joining the group is not idleness.

        Returns the counts of the committed work. Raises ProcessorFailed when it cannot go on;
        whatever was not committed then is redone by the next run.
        """
        began = time.monotonic()
        try:
            self._start()
            reason = self._loop(began, max_runtime, idle_timeout)
            self._commit()
        except BaseException:
            # SIGINT, a fatal error or a bug: nothing half-done may become visible.
            if self._unit is not None:
                self._unit.abort_quietly()
            raise
        finally:
            self._take_counts()
            self._close()
        self.counts.seconds = round(time.monotonic() - began, 3)
        self.counts.stop_reason = reason
        log.info("%s stopped (%s): %d in, %d out, %d dead-lettered, %d skipped, %d transactions "
                 "(%d aborted) in %.1f s", self.name, reason, self.counts.records_in,
                 self.counts.records_out, self.counts.dead_lettered, self.counts.skipped,
                 self.counts.transactions, self.counts.aborted_transactions, self.counts.seconds)
        return self.counts

    def _start(self) -> None:
        tid = self.transactional_id
        self._producer = TransactionalProducer(
            {"linger.ms": 5, "transaction.timeout.ms": 60_000, **self.client_config, **self.producer_overrides},
            tid, label=self.name, policy=TRANSACTIONS, client_factory=Producer)  # looked up here: tests replace it
        wanted = [*self.input_topics, self.output_topic, *([self.dlq_topic] if self.dlq_topic else [])]
        self._partition_counts = self._producer.check_topics(wanted)
        # Aborts (or completes) whatever a previous instance with this id left open, so the
        # committed offsets read below are stable; it must come before the consumer joins.
        self._producer.init()
        self._consumer = Consumer({
            "auto.offset.reset": "earliest",
            # Learn of a rebalance (a new instance joining) within a second, not librdkafka's 3 s.
            "heartbeat.interval.ms": 1000,
            **self.client_config,
            **self.consumer_overrides,
            "group.id": self.group_id,
            "group.instance.id": tid,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        })
        self._unit = TransactionUnit(self._producer, on_abort=OnAbort.REWIND, consumer=self._consumer,
                                     noun="checkpoint")
        self._consumer.subscribe(self.input_topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._last_activity = None
        self._last_progress = time.monotonic()
        log.info("%s started as %s: %s -> %s (DLQ %s), batch %d, checkpoint every %.2f s",
                 self.name, tid, ", ".join(self.input_topics), self.output_topic,
                 self.dlq_topic or "none", self.batch_size, self.commit_interval)

    def _loop(self, began: float, max_runtime: float | None, idle_timeout: float | None) -> str:
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                return self._stop_reason
            if max_runtime is not None and now - began >= max_runtime:
                return "max_runtime"
            if (idle_timeout is not None and self._last_activity is not None
                    and now - self._last_activity >= idle_timeout):
                return "idle_timeout"
            messages = self._next_batch(self._poll_timeout())
            if messages:
                self._process(messages)
            checkpoint = self._unit.open
            if checkpoint is not None and (
                    len(messages) < self.batch_size  # drained: nothing fetched waits behind these
                    or checkpoint.counts["records_in"] >= self.commit_every
                    or time.monotonic() - checkpoint.began >= self.commit_interval):
                self._commit()
            self._producer.client.poll(0)
            self._log_progress()

    def _poll_timeout(self) -> float:
        """How long to wait for a record: never past the open checkpoint's commit time.

        Waiting the whole ``poll_timeout`` with a checkpoint open would hold its records back
        from ``read_committed`` readers for that long when no more records come.
        """
        checkpoint = self._unit.open
        if checkpoint is None:
            return self.poll_timeout
        due = checkpoint.began + self.commit_interval - time.monotonic()
        return min(self.poll_timeout, max(0.0, due))

    def _next_batch(self, timeout: float) -> list[Any]:
        """Wait for one record, then take whatever else is already fetched, up to batch_size.

        consume(n, timeout) would wait for n records or the whole timeout: under a light load
        every record would sit out the timeout before being processed.
        """
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        if self.batch_size <= 1:
            return [first]
        return [first, *self._consumer.consume(self.batch_size - 1, 0)]

    def _process(self, messages: Iterable[Any]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            if (message.topic(), message.partition()) not in self._assigned:
                # Fetched before a revocation: the new owner reads it from the committed offset.
                continue
            self._last_activity = time.monotonic()
            checkpoint = self._unit.begin()
            record = InputRecord.from_message(message)
            checkpoint.counts["records_in"] += 1
            try:
                # Materialised first, so a transform failing halfway writes nothing of that record.
                outputs = list(self.transform(record))
            except Exception as exc:  # any failure of one record is that record's, never the loop's
                self._dead_letter(record, exc)
            else:
                for output in outputs:
                    self._produce(self.output_topic, output)
                checkpoint.counts["records_out"] += len(outputs)
            # Offsets of handled records, not the consumer's position: a record fetched in the
            # same call that ran on_revoke advanced the position without being handled.
            checkpoint.consumed(record.topic, record.partition, record.offset)

    def _dead_letter(self, record: InputRecord, error: Exception) -> None:
        checkpoint = self._unit.open
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if self.dlq_topic is None:
            checkpoint.counts["skipped"] += 1
            log.error("%s: skipped %s (no DLQ topic): %s: %s", self.name, where,
                      type(error).__name__, error)
            return
        headers = dead_letter_record_headers(error, record, self.name,
                                             dt.datetime.now(dt.timezone.utc))
        self._produce(self.dlq_topic, OutputRecord(record.key, record.value, headers))
        checkpoint.counts["dead_lettered"] += 1
        # One line per dead letter: the seed's notice when there is one (why and where are in the
        # record's dlq.* headers and the counts in the progress lines), else the details.
        if self.dead_letter_notice:
            log.warning(self.dead_letter_notice.replace("{dlq_topic}", self.dlq_topic))
        else:
            log.info("%s: dead-lettered %s to %s: %s: %s", self.name, where, self.dlq_topic,
                     type(error).__name__, error)

    def _produce(self, topic: str, output: OutputRecord) -> None:
        if output.partition is not None and output.partition >= self._partition_counts.get(topic, 0):
            raise ProcessorFailed(
                f"{self.name}: the transform keeps input partition {output.partition}, but "
                f"{topic} has only {self._partition_counts.get(topic)} partition(s); give it at "
                "least as many partitions as the input topics")
        self._producer.produce(topic, output.value, output.key, list(output.headers) if output.headers else None,
                               output.partition)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise ProcessorFailed(f"{self.name}: the consumer of group {self.group_id} failed: {error}")
        self.counts.consumer_errors += 1
        log.warning("%s: consumer error (the client retries): %s", self.name, error)

    def _commit(self, rewind_on_abort: bool = True) -> bool:
        """Commit the open checkpoint (output + input offsets). False when it had to abort."""
        if self._unit.commit():
            self._take_counts()
            return True
        if rewind_on_abort:
            self._rewind()
        self._take_counts()
        return False

    def _take_counts(self) -> None:
        """The run's counts: what the unit committed, and how many transactions it committed and aborted."""
        if self._unit is None:
            return
        for name in _COUNTED:
            setattr(self.counts, name, self._unit.committed[name])
        self.counts.transactions = self._unit.transactions
        self.counts.aborted_transactions = self._unit.aborted

    def _rewind(self) -> None:
        """Seek every held partition back to its committed offset (the aborted work is redone)."""
        if not self._assigned:
            return
        reset = (OFFSET_END if str(self._consumer_setting("auto.offset.reset")).lower()
                 in ("latest", "largest", "end") else OFFSET_BEGINNING)
        try:
            committed = self._consumer.committed(list(self._assigned.values()),
                                                 timeout=TRANSACTIONS.call_timeout_s)
            for tp in committed:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition,
                                                   tp.offset if tp.offset >= 0 else reset))
        except KafkaException as exc:
            # Without a rewind the aborted records would be skipped; a restart re-reads them.
            raise KafkaUnavailable(f"{self.name}: could not rewind to the committed offsets after an "
                                  f"abort: {exc.args[0]}") from None

    def _consumer_setting(self, name: str) -> Any:
        return {"auto.offset.reset": "earliest", **self.client_config,
                **self.consumer_overrides}.get(name)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                # A static member does not leave the group on close: its restart resumes at once.
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("%s: closing the consumer failed: %s", self.name, exc)
            self._consumer = None
        if self._producer is not None:
            # All output went out inside committed or aborted transactions; nothing waits here.
            self._producer.close()
            self._producer = None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = TopicPartition(tp.topic, tp.partition)
        self.counts.rebalances += 1
        self._last_activity = time.monotonic()
        log.info("%s: assigned %s", self.name, _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit while the group generation is still ours, so the next owner starts exactly
        # after what this instance wrote.
        if self._unit is not None and self._unit.open is not None:
            self._commit(rewind_on_abort=False)
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self._start_offsets.pop((tp.topic, tp.partition), None)
        log.info("%s: revoked %s", self.name, _describe(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The partitions may already belong to another member: committing would be fenced anyway.
        if self._unit is not None and self._unit.open is not None:
            log.warning("%s: partitions lost; aborting the open checkpoint", self.name)
            self._unit.abort()
            self._take_counts()
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self._start_offsets.pop((tp.topic, tp.partition), None)
        log.warning("%s: lost %s", self.name, _describe(partitions))

    def _log_progress(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_progress
        if elapsed < self.progress_interval:
            return
        rate = (self.counts.records_in - self._records_in_at_last_progress) / elapsed
        self._last_progress = now
        self._records_in_at_last_progress = self.counts.records_in
        lag = self.lag()
        log.info("%s: %d in, %d out, %d dead-lettered, lag %s, %.0f records/s over %.0f s",
                 self.name, self.counts.records_in, self.counts.records_out,
                 self.counts.dead_lettered, "unknown" if lag is None else lag, rate, elapsed)

    def lag(self) -> int | None:
        """Records behind the high watermark of the held partitions, None while unknown.

        From the client's cached watermarks (a broker query per partition can take half a second
        on a busy machine). A partition not read from since its assignment counts from its
        committed offset, asked for once.
        """
        if self._consumer is None or not self._assigned:
            return None
        positions = {(tp.topic, tp.partition): tp.offset
                     for tp in self._consumer.position(list(self._assigned.values()))}
        unread = [self._assigned[k] for k, offset in positions.items()
                  if offset < 0 and k not in self._start_offsets]
        try:
            if unread:
                for tp in self._consumer.committed(unread, timeout=5):
                    self._start_offsets[(tp.topic, tp.partition)] = tp.offset
            total = 0
            for key, offset in positions.items():
                low, high = self._consumer.get_watermark_offsets(self._assigned[key], cached=True)
                if offset < 0:
                    offset = self._start_offsets.get(key, -1)
                    offset = offset if offset >= 0 else low
                if high < 0 or offset < 0:
                    return None
                total += max(0, high - offset)
        except KafkaException:
            return None
        return total


def _describe(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(p)}" for t, p in sorted(by_topic.items())) or "nothing"
