"""Ingest one staged Avazu hour into Kafka exactly once, in chunks, with a dead-letter queue.

For every chunk of ``chunk_rows`` source rows, one Kafka transaction holds

* each good row: Avro (wire format, registered schema id) on the raw topic, keyed as
  :func:`include.encoding.rows.partition_key` explains;
* each bad row: a DLQ envelope (raw line, reason, column, message, source line, chunk, Airflow
  ids, first-failure time) on the DLQ topic, with the reason as a header;
* the hour's checkpoint (cumulative counts, chunks committed, complete or not) on the compacted
  checkpoint topic.

The transactional producer's life cycle (init, begin, produce, commit, abort, under one retry
policy) is :class:`include.kafka.transactions.TransactionalProducer`'s, and the cycle of each
chunk's transaction :class:`include.kafka.transactions.TransactionUnit`'s (``OnAbort.REDO``: an
aborted chunk is produced again, up to ``max_chunk_attempts`` times); the chunks come from
:mod:`include.ingest.chunks` and the counts go to :mod:`include.ingest.result`.

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
and encoded a batch at a time by :mod:`include.encoding` (the C codec, or Arrow where it is
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
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.avazu.contract import parse_line
from include.avazu.lines import UndecodableLine
from include.encoding import batch_encoder
from include.encoding.batch import BatchEncoder, EncodedBatch, RowCodec
from include.encoding.rows import AdEventEncoder, load_ad_event_schema, partition_key
from include.crash_points import PhaseHook
from include.dead_letters import Origin, build_envelope, envelope_headers, envelope_id, load_dlq_schema
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
from include.ingest.chunks import Chunk, iter_chunks
from include.read_ahead import read_ahead
from include.ingest.config import IngestConfig, IngestTopics
from include.ingest.result import ChunkCounts, IngestResult, ReconciliationError, reconcile
from include.ingest.staging import HourPartition
from include.kafka.errors import TransactionAborted
from include.kafka.headers import GENERATION_HEADER
from include.kafka.reader import reader_config
from include.kafka.registry import lookup_schema_id, schema_fetcher
from include.kafka.transactions import (
    PHASE_AFTER_BEGIN,
    PHASE_AFTER_COMMIT,
    PHASE_BEFORE_COMMIT,
    OnAbort,
    OpenTransaction,
    TransactionalProducer,
    TransactionPolicy,
    TransactionUnit,
)
from include.kafka.wire import AvroEncoder

log = logging.getLogger(__name__)

# Points where a phase hook is called (the transaction unit's and one in the middle of a chunk);
# the crash tests kill the process at each of them.
PHASE_MID_PRODUCE = "mid_produce"
PHASES = (PHASE_AFTER_BEGIN, PHASE_MID_PRODUCE, PHASE_BEFORE_COMMIT, PHASE_AFTER_COMMIT)
# A chunk of 100,000 rows is flushed and committed within one call's timeout; the broker-side
# transaction timeout (transaction.timeout_ms in ingest.yaml) bounds the whole chunk.
TRANSACTIONS = TransactionPolicy(call_timeout_s=120.0, init_timeout_s=60.0)


@dataclass(frozen=True)
class IngestCodecs:
    """The registered schema ids of the three topics and the encoders built on them."""

    rows: AdEventEncoder
    batches: BatchEncoder
    dead_letters: AvroEncoder
    checkpoints: CheckpointCodec

    @classmethod
    def lookup(cls, registry: SchemaRegistryClient, topics: IngestTopics, row_codec: RowCodec) -> IngestCodecs:
        """Look the schemas up under ``<topic>-value``; an unregistered one fails with what to run."""
        ad_event, dlq, checkpoint = load_ad_event_schema(), load_dlq_schema(), load_checkpoint_schema()
        rows = AdEventEncoder(lookup_schema_id(registry, f"{topics.raw}-value", ad_event), ad_event)
        return cls(
            rows=rows,
            batches=batch_encoder(rows, row_codec),
            dead_letters=AvroEncoder(dlq, lookup_schema_id(registry, f"{topics.dlq}-value", dlq)),
            checkpoints=CheckpointCodec(checkpoint, lookup_schema_id(registry, f"{topics.checkpoints}-value", checkpoint),
                                        schema_fetcher(registry)),
        )


class HourlyIngestor:
    """Ingest one staged hour (see the module doc); create one per hour and call :meth:`run`.

    :param partition: the staged hour (:func:`include.ingest.staging.find_partition`)
    :param config: the ingestion settings (:func:`include.ingest.config.load_ingest_config`):
        topics, chunk size, transaction settings, producer tuning, row codec
    :param kafka_config: librdkafka settings of the cluster (bootstrap servers, security)
    :param registry: Schema Registry client; the three value schemas must be registered
    :param origin: the Airflow task doing the work, for DLQ envelopes and checkpoints
    :param reingest: write a finished hour again as a new generation
    :param request_id: identifies a re-ingestion request (the Airflow run id) across its retries
    :param phase_hook: called as ``hook(phase, chunk_index)`` at each of :data:`PHASES`
    """

    def __init__(self, partition: HourPartition, *, config: IngestConfig, kafka_config: dict[str, Any],
                 registry: SchemaRegistryClient, origin: Origin = Origin(), reingest: bool = False,
                 request_id: str | None = None, phase_hook: PhaseHook | None = None):
        self.partition = partition
        self.config = config
        self.kafka_config = dict(kafka_config)
        self.registry = registry
        self.topics = config.topics
        self.origin = origin
        self.reingest = reingest
        self.request_id = request_id if request_id is not None else origin.run_id
        self.phase_hook = phase_hook or (lambda phase, chunk: None)
        self.transactional_id = transactional_id(self.topics.raw, partition.source_id, partition.hour)
        self.key = checkpoint_key(self.topics.raw, partition.source_id, partition.hour)
        self._delivery_errors: list[str] = []
        self._client_errors: Counter[str] = Counter()

    def run(self) -> IngestResult:
        """Ingest what is left of the hour and return the counts; raises on any mismatch."""
        started = time.monotonic()
        codecs = IngestCodecs.lookup(self.registry, self.topics, self.config.row_codec)
        producer = TransactionalProducer(self._producer_config(), self.transactional_id,
                                         label=f"hour {self.partition.hour} of {self.partition.source_id}",
                                         policy=TRANSACTIONS)
        try:
            producer.check_topics(list(self.topics.as_dict().values()), timeout=TRANSACTIONS.init_timeout_s)
            producer.init()
            latest = self._read_checkpoint(codecs)
            plan = plan_run(latest, reingest=self.reingest, request_id=self.request_id)
            result = self._new_result(plan)
            result.row_codec = codecs.batches.name
            log.info("hour %s of %s: %s (generation %s, from chunk %s, row %s of %s; transactional id %s; "
                     "clean rows encoded by the %s codec)",
                     self.partition.hour, self.partition.source_id, plan.action, plan.generation, plan.start_chunk,
                     f"{plan.start_row:,}", f"{self.partition.rows:,}", self.transactional_id, result.row_codec)
            if plan.writes:
                unit = TransactionUnit(producer, on_abort=OnAbort.REDO, phase_hook=self.phase_hook,
                                       max_attempts=self.config.max_chunk_attempts, noun="chunk")
                try:
                    self._ingest(unit, plan, codecs, result, started)
                finally:
                    result.chunk_attempts_aborted = unit.aborted
            else:
                self._take_totals(result, latest)
        finally:
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

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.kafka_config,
            **self.config.producer,
            "transaction.timeout.ms": self.config.transaction_timeout_ms,
            # Success needs no callback per row: a transaction only commits if all its records were written.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery_error,
            "error_cb": self._on_client_error,
        }

    def _on_delivery_error(self, error, message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error}")

    def _on_client_error(self, error: KafkaError) -> None:
        # Broker restarts and the like: librdkafka retries them itself; count and log, never hide.
        self._client_errors[error.name()] += 1
        log.warning("Kafka client error (librdkafka retries it): %s", error)

    def _read_checkpoint(self, codecs: IngestCodecs) -> Checkpoint | None:
        consumer = Consumer(reader_config(self.kafka_config, f"{self.transactional_id}/checkpoint-reader"))
        try:
            return read_latest_checkpoint(consumer, self.topics.checkpoints, self.key, codecs.checkpoints)
        finally:
            consumer.close()

    def _new_result(self, plan: RunPlan) -> IngestResult:
        return IngestResult(
            hour=self.partition.hour, source_id=self.partition.source_id, source_uri=self.partition.source_uri,
            partition_uri=self.partition.data_uri, topics=self.topics.as_dict(), transactional_id=self.transactional_id,
            action=plan.action, generation=plan.generation, chunk_rows=self.config.chunk_rows,
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

    def _ingest(self, unit: TransactionUnit, plan: RunPlan, codecs: IngestCodecs, result: IngestResult,
                started: float) -> None:
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
            prepare = functools.partial(worker.submit, codecs.batches.encode)
            chunks = iter_chunks(self.partition.data_uri, self.config.chunk_rows, plan.start_row, plan.start_chunk, prepare)
            try:
                with contextlib.closing(read_ahead(chunks, name="ingest-read")) as ahead:
                    for chunk in ahead:
                        counts = self._commit_chunk(unit, chunk, totals, codecs, line_map, plan.generation, result)
                        wrote_any = True
                        totals = self._advance(totals, counts, chunk)
                        self._count_chunk(result, counts, chunk, totals, started)
            finally:
                worker.shutdown(wait=True, cancel_futures=True)
        if not wrote_any:
            # Nothing left to read but the hour is not marked complete (an empty partition, or a
            # run killed after its last rows but before they were marked): commit the marker alone.
            empty = Chunk(index=totals.chunks_committed, first_row=totals.rows_read, last=True)
            self._commit_chunk(unit, empty, totals, codecs, line_map, plan.generation, result)
            totals = self._advance(totals, ChunkCounts(), empty)
        self._take_totals(result, totals)

    def _count_chunk(self, result: IngestResult, counts: ChunkCounts, chunk: Chunk, totals: Checkpoint, started: float) -> None:
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

    def _advance(self, totals: Checkpoint, counts: ChunkCounts, chunk: Chunk) -> Checkpoint:
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

    def _commit_chunk(self, unit: TransactionUnit, chunk: Chunk, totals: Checkpoint, codecs: IngestCodecs,
                      line_map, generation: int, result: IngestResult) -> ChunkCounts:
        """Write one chunk and its checkpoint in one transaction of the unit (produced again when it aborts)."""
        producer = unit.producer

        def work(txn: OpenTransaction) -> None:
            self._delivery_errors.clear()
            began = time.monotonic()
            try:
                counts = self._produce_chunk(producer, chunk, codecs, line_map, generation)
            except KafkaException as error:  # from the hot path's direct produce() calls
                raise producer.error_for("produce", error) from None
            checkpoint = self._advance(totals, counts, chunk)
            if chunk.last and checkpoint.rows_read != self.partition.rows:
                raise ReconciliationError(
                    f"partition {self.partition.data_uri} holds {checkpoint.rows_read:,} rows but its manifest says "
                    f"{self.partition.rows:,}; re-stage the source")
            producer.produce(self.topics.checkpoints, codecs.checkpoints.encode(checkpoint), self.key)
            waited = time.monotonic()
            self._await_delivery(producer)
            txn.payload = (counts, waited - began, time.monotonic() - waited)

        committing = unit.seconds_committing
        txn = unit.run(work, number=chunk.index)
        counts, producing_s, delivering_s = txn.payload
        result.seconds_producing += producing_s
        result.seconds_committing += delivering_s + unit.seconds_committing - committing
        return counts

    def _await_delivery(self, producer: TransactionalProducer) -> None:
        """Every record of the open transaction acknowledged, or :class:`TransactionAborted` saying why not."""
        timeout = TRANSACTIONS.call_timeout_s
        remaining = producer.flush(timeout)
        if remaining:
            raise TransactionAborted(f"{remaining:,} records were not acknowledged within {timeout:.0f} s")
        if self._delivery_errors:
            raise TransactionAborted(f"{len(self._delivery_errors):,} records failed, first: {self._delivery_errors[0]}")

    def _produce_chunk(self, producer: TransactionalProducer, chunk: Chunk, codecs: IngestCodecs, line_map,
                       generation: int) -> ChunkCounts:
        """Validate, encode and produce a chunk's rows; dead-letter the bad ones (inside the open transaction)."""
        counts = ChunkCounts()
        # The client's own calls in the loop that runs once per row; the rest through the producer.
        client = producer.client
        produce, poll, produce_waiting = client.produce, client.poll, producer.produce
        # Generation 0 carries no header: a header doubles the cost of produce() (measured), and
        # its absence already says "first ingestion". Re-ingested generations say which they are.
        headers = [(GENERATION_HEADER, str(generation).encode())] if generation else None
        if headers:
            produce = functools.partial(client.produce, headers=headers)
        topic = self.topics.raw
        encoder, batches = codecs.rows, codecs.batches
        bad: list[tuple[int, Any, Any]] = []  # (row index, RowError | UndecodableLine, line)
        # The chunk may still be being read: its size is the setting's, or what is left of the hour.
        expected = max(0, min(self.config.chunk_rows, self.partition.rows - chunk.first_row))
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
            first, lines = segment.first_row, segment.lines
            batch: EncodedBatch = encoding.result() if encoding is not None else batches.encode(lines)
            values, keys, start = batch.values, batch.keys, 0
            for declined in [*batch.declined, len(lines)]:
                # The clean rows before the next declined one, already validated and encoded.
                for value, key in zip(values[start:declined], keys[start:declined]):
                    try:  # inline: this loop runs once per row
                        produce(topic, value, key)
                    except BufferError:
                        produce_waiting(topic, value, key, headers)
                if declined == len(lines):
                    break
                start = declined + 1
                # The contract decides the declined row, in its place (see include.encoding.batch).
                line = lines[declined]
                record = parse_line(line)
                if type(record) is not dict:
                    bad.append((first + declined, record, line))
                    continue
                value, key = encoder.encode(record), partition_key(record)
                produce_waiting(topic, value, key, headers)
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
            if now - last_log >= self.config.progress_every_s:
                last_log = now
                log.info("hour %s: chunk %s in progress, %s of its %s rows read, %s produced, %s rows/s",
                         self.partition.hour, chunk.index, f"{counts.rows_read:,}", f"{expected:,}", f"{produced:,}",
                         f"{counts.rows_read / (now - began):,.0f}")
        counts.rows_produced = produced
        counts.bytes_produced = value_bytes
        if bad:
            self._dead_letter(producer, bad, chunk, codecs, line_map, counts, generation)
        if not mid_fired:
            self.phase_hook(PHASE_MID_PRODUCE, chunk.index)
        return counts

    def _dead_letter(self, producer: TransactionalProducer, bad: list, chunk: Chunk, codecs: IngestCodecs, line_map,
                     counts: ChunkCounts, generation: int) -> None:
        failed_at = dt.datetime.now(dt.timezone.utc)
        encoder = codecs.dead_letters
        for index, error, line in bad:
            source_line = line_map.source_line(index)
            length = sha256 = None
            if type(error) is UndecodableLine:
                reason, column, message, raw = error.reason.value, None, error.message, error.raw
                length, sha256 = error.length, error.sha256
            else:
                reason, column, message, raw = error.reason.value, error.field, error.message, line.encode("utf-8")
            envelope = build_envelope(
                source_id=self.partition.source_id, source_uri=self.partition.source_uri, line=source_line,
                hour=self.partition.hour, chunk=chunk.index, reason=reason, field=column, message=message, raw=raw,
                origin=self.origin, failed_at=failed_at, raw_length=length, raw_sha256=sha256,
            )
            value = encoder.encode(envelope)
            key = envelope_id(self.partition.source_id, source_line)
            producer.produce(self.topics.dlq, value, key, envelope_headers(reason, self.partition.hour, generation))
            counts.dead_lettered[reason] += 1
