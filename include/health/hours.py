"""The ingested hours, checked from Kafka: the DLQ ratio of each, and whether its records add up.

Both read the ingestion's own checkpoints (the latest of every hour, read_committed). The
reconciliation does not trust the run's counters alone: it counts the hour's records in the raw
topic and in the DLQ and compares them with the rows the staged manifest says the hour has.

* A raw record belongs to the hour in its ``hour`` field; its generation is its
  ``ingest.generation`` header (none: generation 0). Rows the DLQ reprocessing repaired into the
  raw topic carry ``dlq.*`` headers and are counted apart: their dead letter is still in the DLQ.
* A DLQ record belongs to the hour and generation in its ``ingest.hour`` / ``ingest.generation``
  headers.
* Only the records written since the oldest checkpoint checked (less ``scan_margin_s``) are read,
  so a run reads the last day, not the topic's whole retention.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from include.health.outcome import CheckOutcome, Metric, first_problems
from include.ingest.checkpoint import Checkpoint, load_checkpoint_schema, read_checkpoints
from include.ingest.staging import find_partition
from include.kafka.headers import DLQ_HEADER_PREFIX, GENERATION_HEADER, INGEST_HOUR_HEADER
from include.kafka.reader import read_to_end, reader_config
from include.kafka.wire import AvroDecoder, int_field_reader, load_schema
from include.paths import SCHEMAS_DIR

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

# When a raw record's layout cannot be stepped over (include.kafka.wire.int_field_reader), only its
# hour is read out of it, fastavro skipping the other fields.
_HOUR_ONLY = {**{k: v for k, v in load_schema(SCHEMAS_DIR / "ad_event.avsc").items() if k != "fields"},
              "fields": [{"name": "hour", "type": "int"}]}


class HourReader:
    """The ``hour`` of a raw record's payload, without decoding the rest where its schema allows."""

    def __init__(self, fetch_schema):
        self._fetch = fetch_schema
        self._decoder = AvroDecoder(fetch_schema, reader_schema=_HOUR_ONLY)
        self._readers: dict[int, Any] = {}

    def __call__(self, payload: bytes) -> int:
        schema_id = int.from_bytes(payload[1:5], "big")
        reader = self._readers.get(schema_id)
        if reader is None:
            raw = self._fetch(schema_id)
            reader = int_field_reader(json.loads(raw) if isinstance(raw, str) else raw, "hour") or (
                lambda value: self._decoder.decode(value)["hour"])
            self._readers[schema_id] = reader
        return reader(payload)


def hour_checkpoints(inputs: HealthInputs) -> dict[int, Checkpoint]:
    """The latest checkpoint of every hour ingested into the raw topic, by hour (read once per run)."""
    cached = inputs.cache.get("checkpoints")
    if cached is None:
        topics = inputs.ingest.topics
        consumer = Consumer(reader_config(inputs.kafka_config, f"pipeline-health-{uuid.uuid4().hex}"))
        decoder = AvroDecoder(inputs.fetch_schema, reader_schema=load_checkpoint_schema())
        try:
            found = read_checkpoints(consumer, topics.checkpoints, decoder, raw_topic=topics.raw)
        finally:
            consumer.close()
        # One source per raw topic in practice; with several, the newest checkpoint of the hour wins.
        cached = {}
        for checkpoint in sorted(found.values(), key=lambda c: c.updated_at):
            cached[checkpoint.hour] = checkpoint
        inputs.cache["checkpoints"] = cached
    return cached


def check_dlq_ratio(inputs: HealthInputs) -> CheckOutcome:
    """Fails when an hour of the lookback dead-lettered more than ``dlq.max_ratio`` of its rows."""
    limits, topics = inputs.config.dlq, inputs.ingest.topics
    checkpoints = hour_checkpoints(inputs)
    since = _lookback_start(inputs)
    rows, problems, worst = [], [], 0.0
    for hour, cp in sorted(checkpoints.items()):
        ratio = cp.rows_dead_lettered / cp.rows_read if cp.rows_read else 0.0
        recent = cp.updated_at >= since
        judged = recent and cp.rows_read >= limits.min_rows
        top = ", ".join(f"{reason} {count:,}" for reason, count in Counter(cp.dead_lettered_by_reason).most_common(2))
        verdict = "-" if not judged else ("OVER" if ratio > limits.max_ratio else "ok")
        if judged:
            worst = max(worst, ratio)
        if judged and ratio > limits.max_ratio:
            problems.append(f"hour {hour} dead-lettered {cp.rows_dead_lettered:,} of its {cp.rows_read:,} rows "
                            f"({ratio:.2%}, limit {limits.max_ratio:.2%}; most: {top or 'none'})")
        rows.append({"hour": hour, "rows_read": cp.rows_read, "dead_lettered": cp.rows_dead_lettered,
                     "ratio": f"{ratio:.3%}", "verdict": verdict, "top_reasons": top})
    series = {"dlq_ratio": [{"hour": r["hour"], "ratio": checkpoints[r["hour"]].rows_dead_lettered
                             / max(1, checkpoints[r["hour"]].rows_read)} for r in rows]}
    metrics = [Metric("dlq_ratio_worst", worst, help="Highest DLQ ratio of the hours checked in the lookback"),
               Metric("dlq_ratio_threshold", limits.max_ratio, help="The DLQ ratio an hour may not exceed")]
    judged = sum(1 for r in rows if r["verdict"] != "-")
    if problems:
        summary = (f"{len(problems)} of {judged} recent hour(s) are over the DLQ ratio: {first_problems(problems)}; "
                   f"look at {topics.dlq} (header {INGEST_HOUR_HEADER}) and the hour's ingest_hour task log")
        return CheckOutcome("dlq_ratio", False, summary, _DLQ_COLUMNS, rows, metrics, series)
    if not checkpoints:
        return CheckOutcome("dlq_ratio", True, f"no hour has been ingested into {topics.raw} yet",
                            _DLQ_COLUMNS, rows, metrics, series)
    return CheckOutcome("dlq_ratio", True, f"{judged} recent hour(s) judged, worst DLQ ratio {worst:.3%} "
                        f"(limit {limits.max_ratio:.2%}); {len(rows)} hour(s) in {topics.checkpoints}",
                        _DLQ_COLUMNS, rows, metrics, series)


_DLQ_COLUMNS = ["hour", "rows_read", "dead_lettered", "ratio", "verdict", "top_reasons"]
_RECONCILE_COLUMNS = ["hour", "generation", "staged_rows", "raw", "dlq", "difference", "other_generations",
                      "repaired", "verdict"]


def _lookback_start(inputs: HealthInputs) -> dt.datetime:
    return dt.datetime.fromtimestamp(inputs.now, dt.timezone.utc) - dt.timedelta(
        hours=inputs.config.reconciliation.lookback_hours)


def check_reconciliation(inputs: HealthInputs) -> CheckOutcome:
    """Staged rows of each recent complete hour = its records in the raw topic + the DLQ, counted in Kafka."""
    settings, topics = inputs.config.reconciliation, inputs.ingest.topics
    since = _lookback_start(inputs)
    hours = {h: cp for h, cp in hour_checkpoints(inputs).items() if cp.complete and cp.updated_at >= since}
    if not hours:
        return CheckOutcome("reconciliation", True,
                            f"no hour of {topics.raw} completed in the last {settings.lookback_hours} h", _RECONCILE_COLUMNS)
    scan_from = min(cp.updated_at for cp in hours.values()).timestamp() - settings.scan_margin_s
    raw, repaired, dlq = count_hour_records(inputs, int(scan_from * 1000), set(hours))
    rows, problems = [], []
    for hour, cp in sorted(hours.items()):
        partition = find_partition(inputs.ingest.staging_uri, hour)
        in_raw, in_dlq = raw.get((hour, cp.generation), 0), dlq.get((hour, cp.generation), 0)
        others = sum(n for (h, g), n in raw.items() if h == hour and g != cp.generation)
        if partition is None or partition.source_id != cp.source_id:
            rows.append({"hour": hour, "generation": cp.generation, "staged_rows": "not staged", "raw": in_raw,
                         "dlq": in_dlq, "difference": "", "other_generations": others,
                         "repaired": repaired.get(hour, 0), "verdict": "-"})
            continue
        difference = in_raw + in_dlq - partition.rows
        verdict = "ok" if difference == 0 else ("MISSING" if difference < 0 else "EXTRA")
        if difference:
            what = f"{-difference:,} missing" if difference < 0 else f"{difference:,} more than staged (duplicated?)"
            problems.append(f"hour {hour} generation {cp.generation}: staged {partition.rows:,} rows but Kafka holds "
                            f"{in_raw + in_dlq:,} ({in_raw:,} in {topics.raw} + {in_dlq:,} in {topics.dlq}), {what}")
        rows.append({"hour": hour, "generation": cp.generation, "staged_rows": partition.rows, "raw": in_raw,
                     "dlq": in_dlq, "difference": f"{difference:+,}", "other_generations": others,
                     "repaired": repaired.get(hour, 0), "verdict": verdict})
    metrics = [Metric("reconciliation_difference_rows", float(sum(abs(int(r["difference"].replace(",", "")))
                                                                  for r in rows if r["difference"])),
                      help="Rows by which the recent hours' records in Kafka differ from the staged rows")]
    if problems:
        summary = (f"{len(problems)} of {len(rows)} recent hour(s) do not reconcile: {first_problems(problems)}; "
                   f"look at the hours' ingest_hour task logs and at {topics.raw} (deleted records, or a producer "
                   "writing outside the ingestion)")
        return CheckOutcome("reconciliation", False, summary, _RECONCILE_COLUMNS, rows, metrics)
    checked = sum(1 for r in rows if r["verdict"] == "ok")
    total = sum(r["raw"] + r["dlq"] for r in rows)
    return CheckOutcome("reconciliation", True, f"{checked} recent hour(s) reconcile: {total:,} records in "
                        f"{topics.raw} + {topics.dlq} = their staged rows", _RECONCILE_COLUMNS, rows, metrics)


def count_hour_records(inputs: HealthInputs, since_ms: int, hours: set[int]):
    """Records per (hour, generation) in the raw topic and the DLQ written since ``since_ms``, and repaired rows per hour."""
    topics = inputs.ingest.topics
    hour_of = HourReader(inputs.fetch_schema)
    raw: Counter = Counter()
    repaired: Counter = Counter()
    dlq: Counter = Counter()
    consumer = Consumer(reader_config(inputs.kafka_config, f"pipeline-health-{uuid.uuid4().hex}"))
    began, read = time.monotonic(), 0
    try:
        for message in read_to_end(consumer, [topics.raw], timeout=600, batch=10_000, since_ms=since_ms):
            read += 1
            headers = message.headers()
            if headers is None:  # generation 0, written by the ingestion
                raw[(hour_of(message.value()), 0)] += 1
                continue
            names = dict(headers)
            if any(name.startswith(DLQ_HEADER_PREFIX) for name in names):
                repaired[hour_of(message.value())] += 1
                continue
            generation = int(names.get(GENERATION_HEADER, b"0") or 0)
            raw[(hour_of(message.value()), generation)] += 1
        for message in read_to_end(consumer, [topics.dlq], timeout=600, batch=10_000, since_ms=since_ms):
            read += 1
            names = dict(message.headers() or ())
            hour = names.get(INGEST_HOUR_HEADER)
            if hour is not None:
                dlq[(int(hour), int(names.get(GENERATION_HEADER, b"0") or 0))] += 1
    finally:
        consumer.close()
    inputs.log.info("counted %s records of %s and %s in %.1f s", f"{read:,}", topics.raw, topics.dlq,
                    time.monotonic() - began)
    return ({k: v for k, v in raw.items() if k[0] in hours}, {h: n for h, n in repaired.items() if h in hours},
            {k: v for k, v in dlq.items() if k[0] in hours})
