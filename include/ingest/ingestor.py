"""Ingest one staged Avazu hour into Kafka exactly once, in chunks, with a dead-letter queue.

For every chunk of ``chunk_rows`` source rows, one Kafka transaction holds

* each good row: Avro (wire format, registered schema id) on the raw topic, keyed as
  :func:`include.ingest.rows.partition_key` explains;
* each bad row: a DLQ envelope (raw line, reason, column, message, source line, chunk, Airflow
  ids, first-failure time) on the DLQ topic, with the reason as a header;
* the hour's checkpoint (cumulative counts, chunks committed, complete or not) on the compacted
  checkpoint topic.

That is the exactly-once source pattern of Kafka Connect (KIP-618): rows and progress commit
together or not at all. The producer's ``transactional.id`` is stable per raw topic, source and
hour, so a retried task's ``init_transactions()`` fences a still-running zombie of the previous
try and aborts whatever it left open; only then is the checkpoint read (``read_committed``), and
the run resumes after the last committed chunk. Killed anywhere - mid-chunk, between produce and
commit, after commit - a retry leaves each source row exactly once in either the raw topic or
the DLQ for a ``read_committed`` consumer. A finished hour writes nothing on a re-run unless
re-ingestion is asked for (see :mod:`include.ingest.checkpoint` on generations).

Every run counts rows read, produced and dead-lettered (by reason), chunks, bytes, time and
rows/s, logs progress while it runs, and checks at the end that read = produced + dead-lettered
for the run and for the hour, and - once the hour is complete - that the hour's totals equal the
staging manifest's rows and bad lines. Any mismatch raises :class:`ReconciliationError`.

Hot path, chosen by measurement (bench/bench_ingest.py): the lines of each chunk are validated
and encoded a batch at a time by :mod:`include.ingest.batches` (the C codec, or Arrow where it is
not installed) on two worker threads (both release the GIL), starting as soon as they are read,
while this thread produces the encoded rows; the few rows the batch does not take go through
``parse_line`` (the contract) and the row encoder one by one, in their place in the file. ``produce()`` gets a plain
key and no per-message delivery callback - librdkafka reports only failures
(``delivery.report.only.error``), and a transaction cannot commit unless every one of its
records was written, so success needs no Python callback per row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import queue
import threading
import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generator, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.avazu.contract import Reason, parse_line
from include.ingest.checkpoint import (
    Checkpoint,
    CheckpointCodec,
    RunPlan,
    checkpoint_key,
    load_checkpoint_schema,
    plan_run,
    read_latest_checkpoint,
    transactional_id,
)
from include.ingest.envelope import Origin, build_envelope, envelope_headers, envelope_id, load_dlq_schema
from include.avazu.lines import LineSource, TextLines, UndecodableLine
from include.ingest.batches import BatchEncoder, EncodedBatch, RowCodec, batch_encoder
from include.ingest.rows import AdEventEncoder, load_ad_event_schema, partition_key
from include.ingest.staging import HourPartition
from include.ingest.topics import IngestTopics, SchemaIds, lookup_schema_id
from include.kafka.wire import AvroEncoder

log = logging.getLogger(__name__)

# Points where a phase hook is called; the crash tests kill the process at each of them.
PHASE_AFTER_BEGIN = "after_begin"
PHASE_MID_PRODUCE = "mid_produce"
PHASE_BEFORE_COMMIT = "before_commit"
PHASE_AFTER_COMMIT = "after_commit"
PHASES = (PHASE_AFTER_BEGIN, PHASE_MID_PRODUCE, PHASE_BEFORE_COMMIT, PHASE_AFTER_COMMIT)
PhaseHook = Callable[[str, int], None]
# Starts the batch encoding of a segment's lines (BatchEncoder.encode on a worker thread).
Prepare = Callable[[list[str]], Future]
# Header on the records of a re-ingested generation (1, 2, ...); see include.ingest.checkpoint.
GENERATION_HEADER = "ingest.generation"


class ReconciliationError(RuntimeError):
    """Rows read, produced and dead-lettered do not add up; the message says which counts differ."""


class IngestError(RuntimeError):
    """The hour could not be ingested (a chunk kept failing, the producer was fenced, ...)."""


class TopicsMissing(IngestError):
    """A topic the ingestion writes to does not exist; provisioning creates it."""


@dataclass(frozen=True)
class IngestSettings:
    """How an hour is ingested (from include/config/ingest.yaml)."""

    chunk_rows: int = 100_000
    progress_every_s: float = 10.0
    transaction_timeout_ms: int = 120_000
    max_chunk_attempts: int = 3
    producer: dict[str, Any] = field(default_factory=dict)
    flush_timeout_s: float = 120.0
    init_timeout_s: float = 60.0
    transactional_id_prefix: str = "avazu-ingest"
    row_codec: RowCodec | str = RowCodec.AUTO


@dataclass
class IngestResult:
    """What one run did (its own counts) and where the hour stands (cumulative); JSON-ready via as_dict."""

    hour: int
    source_id: str
    source_uri: str
    partition_uri: str
    topics: dict[str, str]
    transactional_id: str
    action: str
    generation: int
    chunk_rows: int
    resumed_from_chunk: int
    chunks: int = 0
    rows_read: int = 0
    rows_produced: int = 0
    rows_dead_lettered: int = 0
    dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_produced: int = 0
    chunk_attempts_aborted: int = 0
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    seconds_producing: float = 0.0
    seconds_committing: float = 0.0
    hour_chunks: int = 0
    hour_rows_read: int = 0
    hour_rows_produced: int = 0
    hour_rows_dead_lettered: int = 0
    hour_dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    partition_rows: int = 0
    partition_bad_rows: int = 0
    # Errors librdkafka reported and retried by itself (e.g. a broker restart), by name.
    client_errors: dict[str, int] = field(default_factory=dict)
    # What encoded the clean rows: native (the C codec) or arrow (see include.ingest.batches).
    row_codec: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Chunk:
    """Consecutive rows of a partition: text segments ``(first_row_index, lines, ascii)`` and undecodable lines.

    Row indexes count the partition's data lines from 0 (line number minus 2). A chunk may be
    handed out while a reader thread is still filling it (:func:`iter_chunks`); :meth:`items`
    waits for the segments still to come, and ``last`` and ``rows`` are final once it has ended.
    """

    index: int
    first_row: int
    segments: list[tuple[int, list[str], bool] | UndecodableLine] = field(default_factory=list)
    rows: int = 0
    last: bool = False
    # Per segment, its lines' batch encoding under way on a worker thread (None: none started).
    encoded: list[Future | None] = field(default_factory=list)
    complete: bool = True
    error: BaseException | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False, compare=False)

    def add(self, segment: tuple[int, list[str], bool] | UndecodableLine, prepare: Prepare | None) -> None:
        encoding = prepare(segment[1]) if prepare is not None and type(segment) is tuple else None
        with self._changed:
            self.segments.append(segment)
            self.encoded.append(encoding)
            self.rows += len(segment[1]) if type(segment) is tuple else 1
            self._changed.notify_all()

    def finish(self, last: bool = False, error: BaseException | None = None) -> None:
        with self._changed:
            self.last, self.error, self.complete = last, error, True
            self._changed.notify_all()

    def items(self) -> Iterator[tuple[tuple[int, list[str], bool] | UndecodableLine, Future | None]]:
        """Each segment with its encoding, in order, waiting for those still being read; re-iterable."""
        position = 0
        while True:
            with self._changed:
                while position == len(self.segments) and not self.complete:
                    self._changed.wait()
                if position == len(self.segments):
                    if self.error is not None:
                        raise self.error
                    return
                item = self.segments[position], self.encoded[position]
            yield item
            position += 1


@dataclass
class _ChunkCounts:
    rows_read: int = 0
    rows_produced: int = 0
    bytes_read: int = 0
    bytes_produced: int = 0
    dead_lettered: Counter = field(default_factory=Counter)

    @property
    def rows_dead_lettered(self) -> int:
        return sum(self.dead_lettered.values())


class _ChunkDeliveryFailed(Exception):
    """Records of the open transaction were not written; the chunk is aborted and produced again."""


class HourlyIngestor:
    """Ingest one staged hour (see the module doc); create one per hour and call :meth:`run`.

    :param partition: the staged hour (:func:`include.ingest.staging.find_partition`)
    :param kafka_config: librdkafka settings of the cluster (bootstrap servers, security)
    :param registry: Schema Registry client; the three value schemas must be registered
    :param topics: where rows, dead letters and checkpoints go
    :param origin: the Airflow task doing the work, for DLQ envelopes and checkpoints
    :param reingest: write a finished hour again as a new generation
    :param request_id: identifies a re-ingestion request (the Airflow run id) across its retries
    :param phase_hook: called as ``hook(phase, chunk_index)`` at each of :data:`PHASES`
    """

    def __init__(self, partition: HourPartition, *, kafka_config: dict[str, Any], registry: SchemaRegistryClient,
                 topics: IngestTopics = IngestTopics(), settings: IngestSettings = IngestSettings(),
                 origin: Origin = Origin(), reingest: bool = False, request_id: str | None = None,
                 phase_hook: PhaseHook | None = None):
        self.partition = partition
        self.kafka_config = dict(kafka_config)
        self.registry = registry
        self.topics = topics
        self.settings = settings
        self.origin = origin
        self.reingest = reingest
        self.request_id = request_id if request_id is not None else origin.run_id
        self.phase_hook = phase_hook or (lambda phase, chunk: None)
        self.transactional_id = transactional_id(topics.raw, partition.source_id, partition.hour,
                                                 settings.transactional_id_prefix)
        self.key = checkpoint_key(topics.raw, partition.source_id, partition.hour)
        self._delivery_errors: list[str] = []
        self._client_errors: Counter[str] = Counter()

    def run(self) -> IngestResult:
        """Ingest what is left of the hour and return the counts; raises on any mismatch."""
        started = time.monotonic()
        schemas = self._schemas()
        producer = Producer(self._producer_config())
        try:
            self._check_topics(producer)
            producer.init_transactions(self.settings.init_timeout_s)
            latest = self._read_checkpoint(schemas)
            plan = plan_run(latest, reingest=self.reingest, request_id=self.request_id)
            result = self._new_result(plan)
            result.row_codec = schemas["batches"].name
            log.info("hour %s of %s: %s (generation %s, from chunk %s, row %s of %s; transactional id %s; "
                     "clean rows encoded by the %s codec)",
                     self.partition.hour, self.partition.source_id, plan.action, plan.generation, plan.start_chunk,
                     f"{plan.start_row:,}", f"{self.partition.rows:,}", self.transactional_id, result.row_codec)
            if plan.writes:
                self._ingest(producer, plan, schemas, result, started)
            else:
                self._take_totals(result, latest)
        finally:
            producer.flush(5)
            if hasattr(producer, "close"):
                producer.close()
        result.client_errors = dict(self._client_errors)
        result.duration_s = round(time.monotonic() - started, 3)
        result.rows_per_s = round(result.rows_read / result.duration_s, 1) if result.duration_s > 0 else 0.0
        reconcile(result)
        log.info(
            "hour %s %s: read %s rows = %s produced + %s dead-lettered %s in %s chunks (%.1f MB) in %.1f s, %s rows/s; "
            "hour total %s/%s rows, complete=%s",
            result.hour, result.action, f"{result.rows_read:,}", f"{result.rows_produced:,}",
            f"{result.rows_dead_lettered:,}", result.dead_lettered_by_reason or "", result.chunks,
            result.bytes_read / 1e6, result.duration_s, f"{result.rows_per_s:,.0f}",
            f"{result.hour_rows_read:,}", f"{result.partition_rows:,}", result.complete)
        return result

    # -- setup -------------------------------------------------------------------------------

    def _schemas(self) -> dict[str, Any]:
        ad_event, dlq, checkpoint = load_ad_event_schema(), load_dlq_schema(), load_checkpoint_schema()
        ids = SchemaIds(
            raw=lookup_schema_id(self.registry, f"{self.topics.raw}-value", ad_event),
            dlq=lookup_schema_id(self.registry, f"{self.topics.dlq}-value", dlq),
            checkpoints=lookup_schema_id(self.registry, f"{self.topics.checkpoints}-value", checkpoint),
        )
        rows = AdEventEncoder(ids.raw, ad_event)
        return {
            "ids": ids,
            "rows": rows,
            "batches": batch_encoder(rows, self.settings.row_codec),
            "dlq": AvroEncoder(dlq, ids.dlq),
            "checkpoints": CheckpointCodec(checkpoint, ids.checkpoints, lambda i: self.registry.get_schema(i).schema_str),
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.kafka_config,
            **self.settings.producer,
            "transactional.id": self.transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            # Success needs no callback per row: a transaction only commits if all its records were written.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery_error,
            "error_cb": self._on_client_error,
        }

    def _check_topics(self, producer: Producer) -> None:
        """Fail with one sentence when a topic is missing (the broker does not create topics on use).

        Asking for metadata first also has the connection up before ``init_transactions()``,
        which otherwise can wait half a second for its first coordinator lookup.
        """
        metadata = producer.list_topics(timeout=self.settings.init_timeout_s)
        missing = [t for t in self.topics.as_dict().values() if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise TopicsMissing(f"topic(s) {', '.join(missing)} do not exist on the cluster; run the kafka_provisioning DAG "
                                "(or include.ingest.topics.provision_ingest_topics for sandbox topics)")

    def _on_delivery_error(self, error, message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error}")

    def _on_client_error(self, error: KafkaError) -> None:
        # Broker restarts and the like: librdkafka retries them itself; count and log, never hide.
        self._client_errors[error.name()] += 1
        log.warning("Kafka client error (librdkafka retries it): %s", error)

    def _read_checkpoint(self, schemas: dict[str, Any]) -> Checkpoint | None:
        consumer = Consumer({
            **self.kafka_config,
            "group.id": f"{self.transactional_id}/checkpoint-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # The end of the topic shows as an empty fetch; do not let the broker hold it for 500 ms.
            "fetch.wait.max.ms": 10,
        })
        try:
            return read_latest_checkpoint(consumer, self.topics.checkpoints, self.key, schemas["checkpoints"])
        finally:
            consumer.close()

    def _new_result(self, plan: RunPlan) -> IngestResult:
        return IngestResult(
            hour=self.partition.hour, source_id=self.partition.source_id, source_uri=self.partition.source_uri,
            partition_uri=self.partition.data_uri, topics=self.topics.as_dict(), transactional_id=self.transactional_id,
            action=plan.action, generation=plan.generation, chunk_rows=self.settings.chunk_rows,
            resumed_from_chunk=plan.start_chunk, partition_rows=self.partition.rows,
            partition_bad_rows=self.partition.bad_rows,
        )

    @staticmethod
    def _take_totals(result: IngestResult, checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        result.hour_chunks = checkpoint.chunks_committed
        result.hour_rows_read = checkpoint.rows_read
        result.hour_rows_produced = checkpoint.rows_produced
        result.hour_rows_dead_lettered = checkpoint.rows_dead_lettered
        result.hour_dead_lettered_by_reason = dict(checkpoint.dead_lettered_by_reason)
        result.complete = checkpoint.complete

    # -- the chunk loop ----------------------------------------------------------------------

    def _ingest(self, producer: Producer, plan: RunPlan, schemas: dict[str, Any], result: IngestResult, started: float) -> None:
        base = plan.base
        totals = Checkpoint(
            source_id=self.partition.source_id, hour=self.partition.hour, generation=plan.generation,
            reingest_request=plan.reingest_request, source_uri=self.partition.source_uri,
            chunks_committed=base.chunks_committed if base else 0, rows_read=base.rows_read if base else 0,
            rows_produced=base.rows_produced if base else 0, rows_dead_lettered=base.rows_dead_lettered if base else 0,
            bytes_read=base.bytes_read if base else 0,
            dead_lettered_by_reason=dict(base.dead_lettered_by_reason) if base else {},
        )
        line_map = self.partition.line_map()
        wrote_any = False
        # Two encoding threads: both batch encoders release the GIL, so they run beside this thread's
        # produce() calls and librdkafka's threads (bench/bench_ingest.py measured one, two and three).
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-encode") as worker:
            prepare = functools.partial(worker.submit, schemas["batches"].encode)
            chunks = iter_chunks(self.partition.data_uri, self.settings.chunk_rows, plan.start_row, plan.start_chunk, prepare)
            try:
                with contextlib.closing(_read_ahead(chunks)) as ahead:
                    for chunk in ahead:
                        counts = self._commit_chunk(producer, chunk, totals, schemas, line_map, plan.generation, result)
                        wrote_any = True
                        totals = self._advance(totals, counts, chunk)
                        self._count_chunk(result, counts, chunk, totals, started)
            finally:
                worker.shutdown(wait=True, cancel_futures=True)
        if not wrote_any:
            # Nothing left to read but the hour is not marked complete (an empty partition, or a
            # run killed after its last rows but before they were marked): commit the marker alone.
            empty = Chunk(index=totals.chunks_committed, first_row=totals.rows_read, last=True)
            self._commit_chunk(producer, empty, totals, schemas, line_map, plan.generation, result)
            totals = self._advance(totals, _ChunkCounts(), empty)
        self._take_totals(result, totals)

    def _count_chunk(self, result: IngestResult, counts: _ChunkCounts, chunk: Chunk, totals: Checkpoint, started: float) -> None:
        result.chunks += 1
        result.rows_read += counts.rows_read
        result.rows_produced += counts.rows_produced
        result.rows_dead_lettered += counts.rows_dead_lettered
        result.bytes_read += counts.bytes_read
        result.bytes_produced += counts.bytes_produced
        for reason, n in counts.dead_lettered.items():
            result.dead_lettered_by_reason[reason] = result.dead_lettered_by_reason.get(reason, 0) + n
        elapsed = time.monotonic() - started
        log.info("hour %s: chunk %s committed - %s of %s rows (%.0f%%), this run %s produced + %s dead-lettered, %s rows/s",
                 self.partition.hour, chunk.index, f"{totals.rows_read:,}", f"{self.partition.rows:,}",
                 100.0 * totals.rows_read / max(1, self.partition.rows), f"{result.rows_produced:,}",
                 f"{result.rows_dead_lettered:,}", f"{result.rows_read / elapsed if elapsed else 0:,.0f}")

    def _advance(self, totals: Checkpoint, counts: _ChunkCounts, chunk: Chunk) -> Checkpoint:
        by_reason = Counter(totals.dead_lettered_by_reason)
        by_reason.update(counts.dead_lettered)
        return Checkpoint(
            source_id=totals.source_id, hour=totals.hour, generation=totals.generation,
            reingest_request=totals.reingest_request, source_uri=totals.source_uri,
            chunks_committed=chunk.index + 1, rows_read=totals.rows_read + counts.rows_read,
            rows_produced=totals.rows_produced + counts.rows_produced,
            rows_dead_lettered=totals.rows_dead_lettered + counts.rows_dead_lettered,
            bytes_read=totals.bytes_read + counts.bytes_read, dead_lettered_by_reason=dict(sorted(by_reason.items())),
            complete=chunk.last, run_id=self.origin.run_id,
        )

    def _commit_chunk(self, producer: Producer, chunk: Chunk, totals: Checkpoint, schemas: dict[str, Any],
                      line_map, generation: int, result: IngestResult) -> _ChunkCounts:
        """Write one chunk and its checkpoint in one transaction, retrying aborted attempts."""
        attempts = self.settings.max_chunk_attempts
        for attempt in range(1, attempts + 1):
            self._delivery_errors.clear()
            producer.begin_transaction()
            try:
                self.phase_hook(PHASE_AFTER_BEGIN, chunk.index)
                began = time.monotonic()
                counts = self._produce_chunk(producer, chunk, schemas, line_map, generation)
                checkpoint = self._advance(totals, counts, chunk)
                if chunk.last and checkpoint.rows_read != self.partition.rows:
                    raise ReconciliationError(
                        f"partition {self.partition.data_uri} holds {checkpoint.rows_read:,} rows but its manifest says "
                        f"{self.partition.rows:,}; re-stage the source")
                producer.produce(self.topics.checkpoints, schemas["checkpoints"].encode(checkpoint), self.key)
                waited = time.monotonic()
                remaining = producer.flush(self.settings.flush_timeout_s)
                if remaining:
                    raise _ChunkDeliveryFailed(f"{remaining:,} records were not acknowledged within {self.settings.flush_timeout_s:.0f} s")
                if self._delivery_errors:
                    raise _ChunkDeliveryFailed(f"{len(self._delivery_errors):,} records failed, first: {self._delivery_errors[0]}")
                self.phase_hook(PHASE_BEFORE_COMMIT, chunk.index)
                self._commit(producer)
                done = time.monotonic()
                result.seconds_producing += waited - began
                result.seconds_committing += done - waited
                self.phase_hook(PHASE_AFTER_COMMIT, chunk.index)
                return counts
            except (_ChunkDeliveryFailed, KafkaException) as error:
                kafka_error = error.args[0] if isinstance(error, KafkaException) and error.args else None
                if isinstance(kafka_error, KafkaError) and kafka_error.fatal():
                    raise IngestError(
                        f"hour {self.partition.hour}: the producer hit a fatal error ({kafka_error}); if it says "
                        f"'fenced', a newer attempt with transactional id {self.transactional_id} took over") from error
                self._abort(producer)
                result.chunk_attempts_aborted += 1
                if attempt == attempts:
                    raise IngestError(f"hour {self.partition.hour}: chunk {chunk.index} failed {attempts} times, "
                                      f"last: {error}; nothing of it was committed, a retry resumes there") from error
                log.warning("hour %s: chunk %s attempt %s of %s aborted (%s); producing it again",
                            self.partition.hour, chunk.index, attempt, attempts, error)
            except BaseException:
                self._abort(producer)
                raise
        raise AssertionError("unreachable")

    def _commit(self, producer: Producer) -> None:
        for attempt in range(3):
            try:
                producer.commit_transaction(self.settings.flush_timeout_s)
                return
            except KafkaException as error:
                kafka_error = error.args[0]
                # A retriable commit error leaves the transaction committable: ask again.
                if kafka_error.retriable() and not kafka_error.txn_requires_abort() and attempt < 2:
                    log.warning("commit of hour %s needs another try: %s", self.partition.hour, kafka_error)
                    continue
                raise

    def _abort(self, producer: Producer) -> None:
        try:
            producer.abort_transaction(self.settings.flush_timeout_s)
        except KafkaException as error:
            # The transaction is abandoned either way: the next init_transactions() aborts it.
            log.warning("aborting the transaction of hour %s failed: %s", self.partition.hour, error)

    def _produce_chunk(self, producer: Producer, chunk: Chunk, schemas: dict[str, Any], line_map, generation: int) -> _ChunkCounts:
        """Validate, encode and produce a chunk's rows; dead-letter the bad ones (inside the open transaction)."""
        counts = _ChunkCounts()
        produce, poll = producer.produce, producer.poll
        # Generation 0 carries no header: a header doubles the cost of produce() (measured), and
        # its absence already says "first ingestion". Re-ingested generations say which they are.
        headers = [(GENERATION_HEADER, str(generation).encode())] if generation else None
        if headers:
            def produce(topic, value, key, _produce=producer.produce):
                _produce(topic, value, key, headers=headers)
        topic = self.topics.raw
        encoder: AdEventEncoder = schemas["rows"]
        batches: BatchEncoder = schemas["batches"]
        bad: list[tuple[int, Any, Any]] = []  # (row index, RowError | UndecodableLine, line)
        # The chunk may still be being read: its size is the setting's, or what is left of the hour.
        expected = max(0, min(self.settings.chunk_rows, self.partition.rows - chunk.first_row))
        half = expected // 2
        mid_fired = expected == 0
        began = last_log = time.monotonic()
        produced = value_bytes = 0
        for segment, encoding in chunk.items():
            if type(segment) is UndecodableLine:
                bad.append((segment.line - 2, segment, None))
                counts.bytes_read += len(segment.raw) + 1
                counts.rows_read += 1
                continue
            first, lines, _ = segment
            batch: EncodedBatch = encoding.result() if encoding is not None else batches.encode(lines)
            values, keys, start = batch.values, batch.keys, 0
            for declined in [*batch.declined, len(lines)]:
                # The clean rows before the next declined one, already validated and encoded.
                for value, key in zip(values[start:declined], keys[start:declined]):
                    try:  # inline: this loop runs once per row
                        produce(topic, value, key)
                    except BufferError:
                        self._produce(producer, topic, value, key, headers)
                if declined == len(lines):
                    break
                start = declined + 1
                # The contract decides the declined row, in its place (see include.ingest.batches).
                line = lines[declined]
                record = parse_line(line)
                if type(record) is not dict:
                    bad.append((first + declined, record, line))
                    continue
                value, key = encoder.encode(record), partition_key(record)
                self._produce(producer, topic, value, key, headers)
                produced += 1
                value_bytes += len(value)
            produced += batch.taken
            value_bytes += batch.payload_bytes
            counts.rows_read += len(lines)
            counts.bytes_read += batch.text_bytes + len(lines)
            poll(0)
            if not mid_fired and counts.rows_read >= half:
                mid_fired = True
                self.phase_hook(PHASE_MID_PRODUCE, chunk.index)
            now = time.monotonic()
            if now - last_log >= self.settings.progress_every_s:
                last_log = now
                log.info("hour %s: chunk %s in progress, %s of its %s rows read, %s produced, %s rows/s",
                         self.partition.hour, chunk.index, f"{counts.rows_read:,}", f"{expected:,}", f"{produced:,}",
                         f"{counts.rows_read / (now - began):,.0f}")
        counts.rows_produced = produced
        counts.bytes_produced = value_bytes
        if bad:
            self._dead_letter(producer, bad, chunk, schemas, line_map, counts, generation)
        if not mid_fired:
            self.phase_hook(PHASE_MID_PRODUCE, chunk.index)
        return counts

    @staticmethod
    def _produce(producer: Producer, topic: str, value: bytes, key: str, headers=None) -> None:
        """``produce()``; while librdkafka's queue is full, serve it until there is room (it drains as batches are acked)."""
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                producer.poll(0.05)

    def _dead_letter(self, producer: Producer, bad: list, chunk: Chunk, schemas: dict[str, Any], line_map,
                     counts: _ChunkCounts, generation: int) -> None:
        failed_at = dt.datetime.now(dt.timezone.utc)
        encoder: AvroEncoder = schemas["dlq"]
        for index, error, line in bad:
            source_line = line_map.source_line(index)
            if type(error) is UndecodableLine:
                reason, column, message, raw = Reason.BAD_ENCODING.value, None, error.message, error.raw
            else:
                reason, column, message, raw = error.reason.value, error.field, error.message, line.encode("utf-8")
            envelope = build_envelope(
                source_id=self.partition.source_id, source_uri=self.partition.source_uri, line=source_line,
                hour=self.partition.hour, chunk=chunk.index, reason=reason, field=column, message=message, raw=raw,
                origin=self.origin, failed_at=failed_at,
            )
            value = encoder.encode(envelope)
            key = envelope_id(self.partition.source_id, source_line)
            self._produce(producer, self.topics.dlq, value, key, envelope_headers(reason, self.partition.hour, generation))
            counts.dead_lettered[reason] += 1


def _read_ahead(chunks: Generator[Chunk, None, None], depth: int = 1) -> Iterator[Chunk]:
    """``chunks``, read on a thread of their own up to ``depth`` chunks ahead of the consumer.

    Reading (inflating, decoding, splitting lines, starting each run's encoding) then overlaps
    producing instead of waiting for it; with :func:`iter_chunks` producing starts on the
    first lines of a chunk rather than after its last. An error while reading is raised in the
    consumer's thread when it reaches that point; when the consumer stops early (close this
    generator), the reader stops at its next chunk.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)
        else:
            put(done)
        finally:
            chunks.close()

    reader = threading.Thread(target=read, name="ingest-read", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def iter_chunks(data_uri: str, chunk_rows: int, start_row: int = 0, start_chunk: int = 0,
                prepare: Prepare | None = None) -> Iterator[Chunk]:
    """A partition's rows from ``start_row`` on, in chunks of ``chunk_rows``; the last one is marked ``last``.

    Rows are counted from 0 after the header, so a resumed run skips exactly the rows its
    checkpoint counted. Each chunk is yielded as soon as it has its first row and then goes on
    being filled (:meth:`Chunk.items` waits for the rest); it is finished - ``last`` known - when
    the next row or the end of the partition is seen, so the previous chunk is always finished
    before the next one is yielded. An error while reading finishes the chunk being filled with
    that error and is raised. ``prepare`` is called on each run of lines as soon as it is read
    (see :attr:`Chunk.encoded`).
    """
    chunk: Chunk | None = None

    def start(first_row: int) -> Chunk:
        index = start_chunk if chunk is None else chunk.index + 1
        if chunk is not None:
            chunk.finish(last=False)
        return Chunk(index=index, first_row=first_row, complete=False)

    try:
        for item in LineSource(data_uri):
            if type(item) is TextLines:
                lines, row = item.lines, item.first_line - 2
                if row + len(lines) <= start_row:
                    continue
                if row < start_row:
                    lines, row = lines[start_row - row:], start_row
                while lines:
                    if chunk is None or chunk.rows == chunk_rows:
                        chunk = start(row)
                        yield chunk
                    take = min(chunk_rows - chunk.rows, len(lines))
                    chunk.add((row, lines[:take] if take < len(lines) else lines, item.ascii), prepare)
                    row += take
                    lines = lines[take:]
            else:
                if item.line - 2 < start_row:
                    continue
                if chunk is None or chunk.rows == chunk_rows:
                    chunk = start(item.line - 2)
                    yield chunk
                chunk.add(item, prepare)
    except BaseException as error:
        if chunk is not None and not chunk.complete:
            chunk.finish(error=error)
        raise
    if chunk is not None:
        chunk.finish(last=True)


def reconcile(result: IngestResult) -> None:
    """Raise :class:`ReconciliationError` unless every count of the run and of the hour adds up."""
    problems = []
    if result.rows_read != result.rows_produced + result.rows_dead_lettered:
        problems.append(f"this run read {result.rows_read:,} rows but produced {result.rows_produced:,} "
                        f"and dead-lettered {result.rows_dead_lettered:,}")
    if sum(result.dead_lettered_by_reason.values()) != result.rows_dead_lettered:
        problems.append(f"this run's dead letters by reason {result.dead_lettered_by_reason} do not add up to {result.rows_dead_lettered:,}")
    if result.hour_rows_read != result.hour_rows_produced + result.hour_rows_dead_lettered:
        problems.append(f"the hour's checkpoint counts {result.hour_rows_read:,} rows read but {result.hour_rows_produced:,} "
                        f"produced and {result.hour_rows_dead_lettered:,} dead-lettered")
    if result.complete:
        if result.hour_rows_read != result.partition_rows:
            problems.append(f"the hour is complete with {result.hour_rows_read:,} rows read but its partition has {result.partition_rows:,}")
        if result.hour_rows_dead_lettered != result.partition_bad_rows:
            problems.append(f"the hour dead-lettered {result.hour_rows_dead_lettered:,} rows but staging found "
                            f"{result.partition_bad_rows:,} bad lines")
    if problems:
        raise ReconciliationError(f"hour {result.hour} of {result.source_id} does not reconcile: " + "; ".join(problems))
