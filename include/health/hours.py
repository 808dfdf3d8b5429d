"""The ingested hours, checked from Kafka: the DLQ ratio of each, and whether its records add up.

Both read the ingestion's own checkpoints (the latest of every source of every hour,
read_committed). The reconciliation does not trust the runs' counters alone: it counts the hour's
records in the raw topic and in the DLQ and compares them with the rows the hour's ingestion read,
which must also be the rows of the hour's staged manifest where that is found.

* A raw record belongs to the hour in its ``hour`` field; its generation is its
  ``ingest.generation`` header (none: generation 0). Rows the DLQ reprocessing repaired into the
  raw topic carry ``dlq.*`` headers and are counted apart: their dead letter is still in the DLQ.
* A DLQ record belongs to the hour and generation in its ``ingest.hour`` / ``ingest.generation``
  headers. One without ``ingest.hour`` was not written by the ingestion (by hand, or by another
  producer): it belongs to no hour and is counted apart ("unattributed"); dlq_reprocessing parks
  such a record as ``UNDECODABLE`` when it is not a DlqEnvelope at all.
* Only the records written since the oldest checkpoint checked (less ``scan_margin_s``) are read,
  so a run reads the last day, not the topic's whole retention.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from include.encoding.native import int_field_counts
from include.health.outcome import CheckOutcome, Metric, first_problems
from include.ingest.checkpoint import Checkpoint, checkpoint_keys_of, load_checkpoint_schema, read_checkpoints
from include.ingest.config import IngestTopics
from include.ingest.staging import find_partition
from include.kafka.headers import DLQ_HEADER_PREFIX, INGEST_HOUR_HEADER, generation_of
from include.kafka.reader import read_batches_to_end, read_to_end, reader_config
from include.kafka.wire import AvroDecoder, int_field_reader, int_field_steps, load_schema, split_header, wire_header
from include.paths import SCHEMAS_DIR

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

# When a raw record's layout cannot be stepped over (include.kafka.wire.int_field_reader), only its
# hour is read out of it, fastavro skipping the other fields.
_HOUR_ONLY = {**{k: v for k, v in load_schema(SCHEMAS_DIR / "ad_event.avsc").items() if k != "fields"},
              "fields": [{"name": "hour", "type": "int"}]}


class HourReader:
    """The ``hour`` of a raw record's payload, without decoding the rest where its schema allows;
    ``count`` counts a list of them (by the C codec where it is installed)."""

    def __init__(self, fetch_schema):
        self._fetch = fetch_schema
        self._decoder = AvroDecoder(fetch_schema, reader_schema=_HOUR_ONLY)
        self._readers: dict[int, Any] = {}
        self._steps: dict[int, str | None] = {}
        self._counts = int_field_counts()

    def __call__(self, payload: bytes) -> int:
        return self._reader(split_header(payload)[0])(payload)

    def _reader(self, schema_id: int):
        reader = self._readers.get(schema_id)
        if reader is None:
            raw = self._fetch(schema_id)
            schema = json.loads(raw) if isinstance(raw, str) else raw
            self._steps[schema_id] = int_field_steps(schema, "hour")
            reader = int_field_reader(schema, "hour") or (lambda value: self._decoder.decode(value)["hour"])
            self._readers[schema_id] = reader
        return reader

    def count(self, payloads: list[bytes]) -> Counter:
        """How many of ``payloads`` belong to each hour. The C codec counts those of the first one's
        schema in one call; any other is read one at a time (and a payload that is not in the wire
        format raises, as one read alone does)."""
        if not payloads:
            return Counter()
        schema_id = split_header(payloads[0])[0]
        self._reader(schema_id)
        steps = self._steps[schema_id]
        if self._counts is None or steps is None:
            return Counter(map(self, payloads))
        found, declined = self._counts(payloads, wire_header(schema_id), steps)
        counts = Counter(found)
        counts.update(self(payloads[i]) for i in declined)
        return counts


def read_hour_checkpoints(kafka_config: dict[str, Any], fetch_schema: Callable[[int], str],
                          topics: IngestTopics) -> dict[int, list[Checkpoint]]:
    """The latest checkpoint of every source of every hour ingested into ``topics.raw``, oldest first per hour.

    One source per raw topic is the rule; a second one (a demo file, then the real one) writes the
    same hours again, and each source's checkpoint accounts for its own rows.
    """
    consumer = Consumer(reader_config(kafka_config, f"hour-checkpoints-{uuid.uuid4().hex}"))
    decoder = AvroDecoder(fetch_schema, reader_schema=load_checkpoint_schema())
    try:
        prefix = checkpoint_keys_of(topics.raw)
        found = read_checkpoints(consumer, topics.checkpoints,
                                 lambda payload: Checkpoint.from_record(decoder.decode(payload)),
                                 keep=lambda key: key.startswith(prefix), batch=10_000)
    finally:
        consumer.close()
    by_hour: dict[int, list[Checkpoint]] = {}
    for checkpoint in sorted(found.values(), key=lambda c: c.updated_at):
        by_hour.setdefault(checkpoint.hour, []).append(checkpoint)
    return by_hour


def hour_checkpoints(inputs: HealthInputs) -> dict[int, list[Checkpoint]]:
    """:func:`read_hour_checkpoints` of the ingestion's topics, read once per run."""
    cached = inputs.cache.get("checkpoints")
    if cached is None:
        cached = read_hour_checkpoints(inputs.kafka_config, inputs.fetch_schema, inputs.ingest.topics)
        inputs.cache["checkpoints"] = cached
    return cached


@dataclass(frozen=True)
class HourDeadLetters:
    """An hour's rows read and dead-lettered, over every source that ingested it (their checkpoints)."""

    hour: int
    sources: int
    rows_read: int
    dead_lettered: int
    by_reason: Counter

    @property
    def ratio(self) -> float:
        return self.dead_lettered / self.rows_read if self.rows_read else 0.0


def dead_letters_by_hour(checkpoints: dict[int, list[Checkpoint]]) -> list[HourDeadLetters]:
    """Each hour's dead-letter counts (see :class:`HourDeadLetters`), in hour order."""
    hours = []
    for hour, cps in sorted(checkpoints.items()):
        reasons: Counter = Counter()
        for cp in cps:
            reasons.update(cp.dead_lettered_by_reason)
        hours.append(HourDeadLetters(hour, len(cps), sum(cp.rows_read for cp in cps),
                                     sum(cp.rows_dead_lettered for cp in cps), reasons))
    return hours


def check_dlq_ratio(inputs: HealthInputs) -> CheckOutcome:
    """Fails when an hour of the lookback dead-lettered more than ``dlq.max_ratio`` of its rows."""
    limits, topics = inputs.config.dlq, inputs.ingest.topics
    checkpoints = hour_checkpoints(inputs)
    since = _lookback_start(inputs)
    rows, problems, series, worst = [], [], [], 0.0
    for counts in dead_letters_by_hour(checkpoints):
        hour, read, dead, ratio = counts.hour, counts.rows_read, counts.dead_lettered, counts.ratio
        judged = any(cp.updated_at >= since for cp in checkpoints[hour]) and read >= limits.min_rows
        top = ", ".join(f"{reason} {count:,}" for reason, count in counts.by_reason.most_common(2))
        if judged:
            worst = max(worst, ratio)
            if ratio > limits.max_ratio:
                problems.append(f"hour {hour} dead-lettered {dead:,} of its {read:,} rows "
                                f"({ratio:.2%}, limit {limits.max_ratio:.2%}; most: {top or 'none'})")
        rows.append({"hour": hour, "sources": counts.sources, "rows_read": read, "dead_lettered": dead,
                     "ratio": f"{ratio:.3%}", "verdict": "-" if not judged else ("OVER" if ratio > limits.max_ratio else "ok"),
                     "top_reasons": top})
        series.append({"hour": hour, "ratio": ratio})
    metrics = [Metric("dlq_ratio_worst", worst, help="Highest DLQ ratio of the hours checked in the lookback"),
               Metric("dlq_ratio_threshold", limits.max_ratio, help="The DLQ ratio an hour may not exceed")]
    judged = sum(1 for r in rows if r["verdict"] != "-")
    if problems:
        summary = (f"{len(problems)} of {judged} recent hour(s) are over the DLQ ratio: {first_problems(problems)}; "
                   f"look at {topics.dlq} (header {INGEST_HOUR_HEADER}) and the hour's ingest_hour task log")
        return CheckOutcome("dlq_ratio", False, summary, _DLQ_COLUMNS, rows, metrics, {"dlq_ratio": series})
    if not checkpoints:
        return CheckOutcome("dlq_ratio", True, f"no hour has been ingested into {topics.raw} yet",
                            _DLQ_COLUMNS, rows, metrics, {"dlq_ratio": series})
    return CheckOutcome("dlq_ratio", True, f"{judged} recent hour(s) judged, worst DLQ ratio {worst:.3%} "
                        f"(limit {limits.max_ratio:.2%}); {len(rows)} hour(s) in {topics.checkpoints}",
                        _DLQ_COLUMNS, rows, metrics, {"dlq_ratio": series})


_DLQ_COLUMNS = ["hour", "sources", "rows_read", "dead_lettered", "ratio", "verdict", "top_reasons"]
_RECONCILE_COLUMNS = ["hour", "generation", "sources", "expected", "raw", "dlq", "difference", "other_generations",
                      "repaired", "staged", "verdict"]


def _lookback_start(inputs: HealthInputs) -> dt.datetime:
    return dt.datetime.fromtimestamp(inputs.now, dt.timezone.utc) - dt.timedelta(
        hours=inputs.config.reconciliation.lookback_hours)


def check_reconciliation(inputs: HealthInputs) -> CheckOutcome:
    """Rows of each recent complete hour = its records in the raw topic + the DLQ, counted in Kafka.

    The rows an hour should have are its sources' rows read (each source's latest complete
    checkpoint), and where the hour's staged manifest is found (the config's staging), the
    manifest's rows must be what its source's checkpoint read.
    """
    settings, topics = inputs.config.reconciliation, inputs.ingest.topics
    since = _lookback_start(inputs)
    recent = {h: [cp for cp in cps if cp.complete] for h, cps in hour_checkpoints(inputs).items()
              if any(cp.complete and cp.updated_at >= since for cp in cps)}
    if not recent:
        return CheckOutcome("reconciliation", True,
                            f"no hour of {topics.raw} completed in the last {settings.lookback_hours} h", _RECONCILE_COLUMNS)
    scan_from = min(cp.updated_at for cps in recent.values() for cp in cps if cp.updated_at >= since)
    scan_from = scan_from - dt.timedelta(seconds=settings.scan_margin_s)
    raw, repaired, dlq, unattributed = count_hour_records(inputs, int(scan_from.timestamp() * 1000), set(recent))
    rows, problems = [], []
    for hour, cps in sorted(recent.items()):
        # Checkpoints written before the scan started account for records the scan did not read.
        cps = [cp for cp in cps if cp.updated_at >= scan_from]
        expected: Counter = Counter()
        for cp in cps:
            expected[cp.generation] += cp.rows_read
        staged = _staged_rows(inputs, hour, cps, problems)
        for generation, rows_expected in sorted(expected.items()):
            in_raw, in_dlq = raw.get((hour, generation), 0), dlq.get((hour, generation), 0)
            difference = in_raw + in_dlq - rows_expected
            if difference:
                what = f"{-difference:,} missing" if difference < 0 else f"{difference:,} more than ingested (duplicated?)"
                sources = f" from {len(cps)} sources" if len(cps) > 1 else ""
                problems.append(f"hour {hour} generation {generation}: {rows_expected:,} rows ingested{sources} "
                                f"({staged}) but Kafka holds {in_raw + in_dlq:,} ({in_raw:,} in {topics.raw} + "
                                f"{in_dlq:,} in {topics.dlq}), {what}")
            others = sum(n for (h, g), n in raw.items() if h == hour and g not in expected)
            rows.append({"hour": hour, "generation": generation, "sources": len(cps), "expected": rows_expected,
                         "raw": in_raw, "dlq": in_dlq, "difference": difference, "other_generations": others,
                         "repaired": repaired.get(hour, 0), "staged": staged,
                         "verdict": "ok" if difference == 0 else ("MISSING" if difference < 0 else "EXTRA")})
    metrics = [Metric("reconciliation_difference_rows", float(sum(abs(r["difference"]) for r in rows)),
                      help="Rows by which the recent hours' records in Kafka differ from the rows ingested")]
    if problems:
        summary = (f"{len(problems)} problem(s) in {len(rows)} recent hour(s): {first_problems(problems)}; "
                   f"look at the hours' ingest_hour task logs and at {topics.raw} (deleted records, or a producer "
                   "writing outside the ingestion)")
        return CheckOutcome("reconciliation", False, summary, _RECONCILE_COLUMNS, rows, metrics)
    total = sum(r["raw"] + r["dlq"] for r in rows)
    others = (f"; {unattributed:,} record(s) in {topics.dlq} without an {INGEST_HOUR_HEADER} header are not the "
              "ingestion's and count to no hour (dlq_reprocessing parks those that are no dead letter as UNDECODABLE)"
              if unattributed else "")
    return CheckOutcome("reconciliation", True, f"{len(rows)} recent hour(s) reconcile: {total:,} records in "
                        f"{topics.raw} + {topics.dlq} = the rows ingested{others}", _RECONCILE_COLUMNS, rows, metrics)


def _staged_rows(inputs: HealthInputs, hour: int, cps: list[Checkpoint], problems: list[str]) -> str:
    """Whether the hour's staged manifest agrees with its source's checkpoint (a problem when not)."""
    partition = find_partition(inputs.ingest.staging_uri, hour)
    ours = [cp for cp in cps if partition is not None and cp.source_id == partition.source_id]
    if not ours:
        return "staged elsewhere"
    if ours[0].rows_read != partition.rows:
        problems.append(f"hour {hour}: the staged manifest {partition.manifest_uri} has {partition.rows:,} rows "
                        f"but its ingestion read {ours[0].rows_read:,}")
    return f"manifest {partition.rows:,} rows"


# A progress line every this many raw records (about every 4 s at the measured 250k records/s).
_PROGRESS_EVERY = 1_000_000


def count_hour_records(inputs: HealthInputs, since_ms: int, hours: set[int]):
    """Records per (hour, generation) in the raw topic and the DLQ written since ``since_ms``, repaired rows per
    hour, and the DLQ records that belong to no hour (no ``ingest.hour`` header)."""
    topics = inputs.ingest.topics
    hour_of = HourReader(inputs.fetch_schema)
    raw: Counter = Counter()
    repaired: Counter = Counter()
    dlq: Counter = Counter()
    unattributed = 0
    consumer = Consumer(reader_config(inputs.kafka_config, f"pipeline-health-{uuid.uuid4().hex}"))
    began, read, reported = time.monotonic(), 0, 0
    try:
        for records in read_batches_to_end(consumer, [topics.raw], timeout=600, batch=10_000, since_ms=since_ms):
            read += len(records)
            if read - reported >= _PROGRESS_EVERY:
                reported = read
                elapsed = time.monotonic() - began
                inputs.log.info("counting %s: %s records so far, %s records/s", topics.raw, f"{read:,}",
                                f"{read / elapsed:,.0f}")
            plain = []  # generation 0, written by the ingestion: no headers
            for message in records:
                headers = message.headers()
                if headers is None:
                    plain.append(message.value())
                    continue
                names = dict(headers)
                if any(name.startswith(DLQ_HEADER_PREFIX) for name in names):
                    repaired[hour_of(message.value())] += 1
                    continue
                raw[(hour_of(message.value()), generation_of(names))] += 1
            for hour, count in hour_of.count(plain).items():
                raw[(hour, 0)] += count
        for message in read_to_end(consumer, [topics.dlq], timeout=600, batch=10_000, since_ms=since_ms):
            read += 1
            names = dict(message.headers() or ())
            hour = names.get(INGEST_HOUR_HEADER)
            if hour is not None and hour.isdigit():
                dlq[(int(hour), generation_of(names))] += 1
            else:
                unattributed += 1
    finally:
        consumer.close()
    elapsed = time.monotonic() - began
    inputs.log.info("counted %s records of %s and %s in %.1f s (%s records/s)", f"{read:,}", topics.raw, topics.dlq,
                    elapsed, f"{read / elapsed if elapsed else 0:,.0f}")
    return ({k: v for k, v in raw.items() if k[0] in hours}, {h: n for h, n in repaired.items() if h in hours},
            {k: v for k, v in dlq.items() if k[0] in hours}, unattributed)
