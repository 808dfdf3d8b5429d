"""ctr_batch: a staged Avazu hour's CTR aggregates, computed with DuckDB and written to ``ctr_batch_hourly``.

The batch side of the stream = batch check: the same impressions and clicks per Avazu hour x
dimension x value as the Flink job's ``ctr_hourly`` (dimensions ``all`` with value ``''``,
:data:`DIMENSIONS`; a null value is ``''``; integers as their decimal text), computed
independently of Kafka and Flink from the staged hour file (:mod:`include.ingest.staging`).

It counts what the stream can count: the rows that reach the raw topic. Nothing here decides
validity on its own; the same places the pipeline asks are asked:

* a row the row contract accepts (:func:`include.avazu.contract.parse_line`) is produced by the
  ingestion. Most rows are taken in bulk the way the contract's fast path takes them - its
  :data:`~include.avazu.contract.CLEAN_ROW_PATTERN` (written in the syntax Python's ``re`` and
  RE2, DuckDB's engine, share) and an hour among the data set's 240 - and every other line is
  decided by ``parse_line`` itself, as the ingestion's codecs leave them to it;
* a row it rejects is dead-lettered, and the DLQ reprocessing puts it back into the raw topic in
  the hour it then holds when its DLQ's rule (include/config/dlq.yaml) repairs it
  (:func:`include.dlq.repairs.repair`, re-validated by the contract). Those rows are counted too,
  apart (``repaired_rows``): the stream sees them once dlq_reprocessing has run. The rest are
  ``parked_rows``, in no aggregate.

Lines come from the project's line reader (:class:`include.avazu.lines.LineSource`: local or
``s3://``, gzip, the ingestion's exact line splitting and decoding), so DuckDB needs no S3
extension and splits no line differently. The counts are checked against the staging manifest:
the rows the contract accepts must be the partition's ``good_rows``.

Writes are idempotent: :func:`write_staged_hour` replaces the staged hour's parts in
``ctr_batch_parts`` and rebuilds ``ctr_batch_hourly`` for every hour they touch, with the run's
row in ``ctr_batch_runs``, in one transaction (include/ctr/migrations/0003_*).

    python -m include.ctr.batch --hour 14102100 [--staging-uri ...] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.avazu.contract import AVAZU_HOURS, CLEAN_ROW_PATTERN, COLUMN_INDEX, COLUMNS, Kind, hour_to_datetime, parse_line
from include.avazu.lines import LineSource, TextLines
from include.dead_letters import MAX_RAW_BYTES, STAGE
from include.errors import PermanentError

if TYPE_CHECKING:
    import psycopg

    from include.dlq.config import DlqSpec
    from include.ingest.staging import HourPartition

log = logging.getLogger(__name__)

# The dimensions besides 'all', as the Flink job (flink/ctr_job.py) groups them and the tables'
# ctr_dimension check allows them (a unit test holds the three equal).
DIMENSIONS = ("site_id", "app_id", "device_type", "banner_pos")
ALL = "all"
# Batch runs on one database take turns on it: each rebuilds hours another may also touch.
ADVISORY_LOCK_KEY = 0x63747262  # "ctrb"
TABLES = ("ctr_batch_hourly", "ctr_batch_parts", "ctr_batch_runs")

Aggregate = tuple[int, str, str, int, int]  # (Avazu hour, dimension, value, impressions, clicks)


class BatchMismatch(PermanentError):
    """The batch's counts of a staged hour disagree with the staging manifest or with themselves."""


class HourNotStaged(PermanentError):
    """The hour asked for has no staged partition where the batch looks."""


class NotAnAvazuHour(PermanentError, ValueError):
    """An hour asked for is not one of the data set's 240 hours."""


def asked_hours(hours: list[Any], ingested: list[dict[str, Any]]) -> list[int]:
    """The hours a run computes: ``hours`` when given, else those of the ingestion runs' events that completed one.

    ``ingested`` are the extras of the ingestion's asset events (include.ingest.result.IngestResult.run_summary).
    """
    from include.avazu.contract import AVAZU_HOUR_SET, FIRST_HOUR, LAST_HOUR

    if hours:
        for hour in hours:
            if not isinstance(hour, int) or hour not in AVAZU_HOUR_SET:
                raise NotAnAvazuHour(f"hour {hour!r} is not an Avazu hour: give YYMMDDHH values in {FIRST_HOUR}..{LAST_HOUR}")
        return sorted(set(hours))
    return sorted({int(extra["hour"]) for extra in ingested if extra.get("complete") and "hour" in extra})


@dataclass(frozen=True)
class RepairRules:
    """What the DLQ reprocessing makes of the ingestion's dead letters, by its DLQ's rules.

    ``spec`` is that DLQ (include/config/dlq.yaml, the one on the catalog's ``dlq`` role); None:
    no dead letter comes back.
    """

    spec: DlqSpec | None

    @classmethod
    def declared(cls) -> RepairRules:
        from include.dlq.config import load_dlq_config
        from include.kafka_admin.catalog import declared_catalog

        topic = declared_catalog().topic_for("dlq")
        return cls(next((spec for spec in load_dlq_config().dlqs if spec.topic == topic), None))

    def repaired(self, reason: str, raw: bytes) -> dict[str, Any] | None:
        """The row a dead letter of ``reason`` with this line comes back as, or None (it stays parked).

        The reprocessor's own order: an envelope keeps at most MAX_RAW_BYTES of a line, and a cut
        line is parked; otherwise the first rule for the reason decides, and a repair rule's row
        must pass the row contract (:func:`include.dlq.repairs.repair` checks it).
        """
        from include.dlq.config import Action
        from include.dlq.repairs import repair

        if self.spec is None or len(raw) > MAX_RAW_BYTES:
            return None
        rule = self.spec.rule_for(reason, STAGE)
        if rule is None or rule.action is not Action.REPAIR:
            return None
        fixed = repair(raw, list(rule.repairs))
        return fixed.record if fixed is not None else None


@dataclass
class StagedHourCounts:
    """What the batch found in one staged hour file, and its aggregates (JSON-ready via :meth:`as_dict`)."""

    staged_hour: int
    source_id: str
    data_uri: str
    rows: int = 0
    good_rows: int = 0  # rows the contract accepts (the ingestion produced them)
    pattern_rows: int = 0  # of which DuckDB took with the contract's clean-row pattern
    repaired_rows: int = 0  # dead letters the DLQ reprocessing repairs into the raw topic
    parked_rows: int = 0  # dead letters that stay out of it
    repaired_by_hour: dict[int, int] = field(default_factory=dict)
    aggregates: list[Aggregate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def hours(self) -> list[int]:
        return sorted({row[0] for row in self.aggregates})

    def impressions(self, hour: int) -> int:
        return sum(row[3] for row in self.aggregates if row[0] == hour and row[1] == ALL)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("aggregates")
        data["repaired_by_hour"] = {str(h): n for h, n in sorted(self.repaired_by_hour.items())}
        data.update(hours=self.hours, aggregate_rows=len(self.aggregates),
                    rows_per_s=round(self.rows / self.seconds, 1) if self.seconds > 0 else 0.0)
        return data


def _field(name: str) -> str:
    """A column of a clean row split on commas (DuckDB lists count from 1), as the stream's value text."""
    text = f"f[{COLUMN_INDEX[name] + 1}]"
    kind = next(c.kind for c in COLUMNS if c.name == name)
    # An integer's value is its decimal text ('05' is 5, as the Avro int the stream reads).
    return f"CAST(CAST({text} AS INTEGER) AS VARCHAR)" if kind is Kind.INT else text


def _aggregate_sql() -> str:
    dimension = " ".join(f"WHEN GROUPING({d}) = 0 THEN '{d}'" for d in DIMENSIONS)
    value = " ".join(f"WHEN GROUPING({d}) = 0 THEN {d}" for d in DIMENSIONS)
    sets = ", ".join(["(hour)", *(f"(hour, {d})" for d in DIMENSIONS)])
    columns = ", ".join(f"{_field(d)} AS {d}" for d in DIMENSIONS)
    return f"""
        WITH taken AS (SELECT string_split(line, ',') AS f FROM judged WHERE taken),
        rows AS (
            SELECT CAST(f[{COLUMN_INDEX['hour'] + 1}] AS INTEGER) AS hour,
                   CAST(f[{COLUMN_INDEX['click'] + 1}] AS INTEGER) AS click, {columns}
            FROM taken
            UNION ALL SELECT hour, click, {', '.join(DIMENSIONS)} FROM decided
        )
        SELECT hour, CASE {dimension} ELSE '{ALL}' END AS dimension, CASE {value} ELSE '' END AS value,
               count(*) AS impressions, sum(click) AS clicks
        FROM rows GROUP BY GROUPING SETS ({sets}) ORDER BY 1, 2, 3"""


def _judged_sql() -> str:
    # The pattern is a SQL literal: DuckDB compiles a constant pattern once, not per row.
    if "'" in CLEAN_ROW_PATTERN:
        raise RuntimeError("the clean-row pattern holds a quote; it can no longer be written as a SQL literal")
    hour = f"TRY_CAST(split_part(line, ',', {COLUMN_INDEX['hour'] + 1}) AS INTEGER)"
    return f"""
        CREATE TEMP TABLE judged AS
        SELECT line, coalesce(regexp_full_match(line, '{CLEAN_ROW_PATTERN}')
                              AND {hour} IN (SELECT hour FROM avazu_hours), false) AS taken
        FROM lines"""


def _value(record: dict[str, Any], name: str) -> str:
    value = record[name]
    return "" if value is None else str(value)


def count_staged_hour(partition: HourPartition, rules: RepairRules, *, progress_every_s: float = 10.0,
                      clock: Callable[[], float] = time.monotonic) -> StagedHourCounts:
    """Read the staged hour file once and count it (see the module doc); checked against its manifest."""
    import duckdb
    import pyarrow as pa

    began = clock()
    counts = StagedHourCounts(partition.hour, partition.source_id, partition.data_uri)
    decided: dict[str, list] = {"hour": [], "click": [], **{d: [] for d in DIMENSIONS}}
    repaired_by_hour: dict[int, int] = {}

    def dead_letter(reason: str, raw: bytes) -> None:
        record = rules.repaired(reason, raw)
        if record is None:
            counts.parked_rows += 1
            return
        counts.repaired_rows += 1
        repaired_by_hour[record["hour"]] = repaired_by_hour.get(record["hour"], 0) + 1
        add(record)

    def add(record: dict[str, Any]) -> None:
        decided["hour"].append(record["hour"])
        decided["click"].append(record["click"])
        for d in DIMENSIONS:
            decided[d].append(_value(record, d))

    def decide(line: str) -> None:
        result = parse_line(line)
        if type(result) is dict:
            counts.good_rows += 1
            add(result)
        else:
            dead_letter(result.reason.value, line.encode("utf-8"))

    blocks: list = []
    source = LineSource(partition.data_uri)
    last_log = began
    for item in source:
        if type(item) is TextLines:
            counts.rows += len(item.lines)
            try:
                blocks.append(pa.array(item.lines, pa.string()))
            except (pa.ArrowException, UnicodeError):
                # Not representable as Arrow text: this block's lines are decided one by one.
                for line in item.lines:
                    decide(line)
        else:
            counts.rows += 1
            dead_letter(item.reason.value, item.raw)
        now = clock()
        if now - last_log >= progress_every_s:
            last_log = now
            log.info("hour %s: %s lines read from %s, %s lines/s", partition.hour, f"{counts.rows:,}",
                     partition.data_uri, f"{counts.rows / (now - began):,.0f}")

    with duckdb.connect() as db:
        db.register("lines", pa.table({"line": pa.chunked_array(blocks, pa.string())}))
        db.register("avazu_hours", pa.table({"hour": pa.array(AVAZU_HOURS, pa.int32())}))
        db.execute(_judged_sql())
        declined = db.execute("SELECT line FROM judged WHERE NOT taken").fetchall()
        counts.pattern_rows = db.execute("SELECT count(*) FROM judged WHERE taken").fetchall()[0][0]
        counts.good_rows += counts.pattern_rows
        for (line,) in declined:
            decide(line)
        db.register("decided", pa.table({"hour": pa.array(decided["hour"], pa.int32()),
                                         "click": pa.array(decided["click"], pa.int32()),
                                         **{d: pa.array(decided[d], pa.string()) for d in DIMENSIONS}}))
        counts.aggregates = [(int(h), d, v, int(i), int(c)) for h, d, v, i, c in db.execute(_aggregate_sql()).fetchall()]
    counts.repaired_by_hour = dict(sorted(repaired_by_hour.items()))
    counts.seconds = round(clock() - began, 3)
    _check(partition, counts)
    log.info("hour %s (%s): %s rows = %s good (%s by the clean-row pattern in DuckDB, the rest by the row contract) "
             "+ %s repaired by the DLQ rules %s + %s parked; %s aggregate rows for hour(s) %s, in %.2f s (%s rows/s)",
             partition.hour, partition.data_uri, f"{counts.rows:,}", f"{counts.good_rows:,}",
             f"{counts.pattern_rows:,}", f"{counts.repaired_rows:,}", counts.repaired_by_hour or "",
             f"{counts.parked_rows:,}", f"{len(counts.aggregates):,}", counts.hours, counts.seconds,
             f"{counts.rows / counts.seconds:,.0f}" if counts.seconds > 0 else "-")
    return counts


def _check(partition: HourPartition, counts: StagedHourCounts) -> None:
    """The batch's counts against the staging manifest (one contract, two passes) and against themselves."""
    problems = []
    if counts.rows != partition.rows:
        problems.append(f"it read {counts.rows:,} rows where the manifest has {partition.rows:,}")
    if counts.good_rows != partition.good_rows:
        problems.append(f"the row contract accepted {counts.good_rows:,} rows where staging counted "
                        f"{partition.good_rows:,} good rows")
    if counts.rows != counts.good_rows + counts.repaired_rows + counts.parked_rows:
        problems.append(f"{counts.rows:,} rows are not {counts.good_rows:,} good + {counts.repaired_rows:,} "
                        f"repaired + {counts.parked_rows:,} parked")
    counted = sum(row[3] for row in counts.aggregates if row[1] == ALL)
    if counted != counts.good_rows + counts.repaired_rows:
        problems.append(f"its 'all' rows count {counted:,} impressions for {counts.good_rows + counts.repaired_rows:,} rows")
    for dimension in DIMENSIONS:
        total = sum(row[3] for row in counts.aggregates if row[1] == dimension)
        if total != counted:
            problems.append(f"its {dimension} rows count {total:,} impressions, its 'all' rows {counted:,}")
    if problems:
        raise BatchMismatch(f"the batch of hour {partition.hour} ({partition.manifest_uri}) does not add up: "
                            + "; ".join(problems))


def hour_timestamp(hour: int) -> dt.datetime:
    """An Avazu hour as the CTR tables hold it: the hour's start, UTC, without a time zone."""
    return hour_to_datetime(hour).replace(tzinfo=None)


@dataclass(frozen=True)
class BatchWrite:
    """What :func:`write_staged_hour` changed: the hours rebuilt and the rows written."""

    staged_hour: int
    hours_rebuilt: list[int]
    part_rows: int
    hourly_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_staged_hour(connection: psycopg.Connection, counts: StagedHourCounts) -> BatchWrite:
    """Replace the staged hour's parts and rebuild ``ctr_batch_hourly`` for the hours they touch, in one transaction."""
    from include.avazu.contract import datetime_to_hour

    staged = hour_timestamp(counts.staged_hour)
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        old = connection.execute("DELETE FROM ctr_batch_parts WHERE staged_hour = %s RETURNING hour", (staged,)).fetchall()
        with connection.cursor().copy("COPY ctr_batch_parts (staged_hour, hour, dimension, value, impressions, clicks) "
                                      "FROM STDIN") as copy:
            for hour, dimension, value, impressions, clicks in counts.aggregates:
                copy.write_row((staged, hour_timestamp(hour), dimension, value, impressions, clicks))
        touched = sorted({row[0] for row in old} | {hour_timestamp(row[0]) for row in counts.aggregates})
        connection.execute("DELETE FROM ctr_batch_hourly WHERE hour = ANY(%s)", (touched,))
        rebuilt = connection.execute(
            "INSERT INTO ctr_batch_hourly (hour, dimension, value, impressions, clicks) "
            "SELECT hour, dimension, value, sum(impressions), sum(clicks) FROM ctr_batch_parts "
            "WHERE hour = ANY(%s) GROUP BY hour, dimension, value", (touched,)).rowcount
        connection.execute(
            """INSERT INTO ctr_batch_runs (staged_hour, source_id, data_uri, rows, good_rows, repaired_rows,
                                           parked_rows, computed_at, seconds)
               VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s)
               ON CONFLICT (staged_hour) DO UPDATE SET source_id = EXCLUDED.source_id, data_uri = EXCLUDED.data_uri,
                   rows = EXCLUDED.rows, good_rows = EXCLUDED.good_rows, repaired_rows = EXCLUDED.repaired_rows,
                   parked_rows = EXCLUDED.parked_rows, computed_at = EXCLUDED.computed_at, seconds = EXCLUDED.seconds""",
            (staged, counts.source_id, counts.data_uri, counts.rows, counts.good_rows, counts.repaired_rows,
             counts.parked_rows, counts.seconds))
    hours = [datetime_to_hour(moment.replace(tzinfo=dt.timezone.utc)) for moment in touched]
    write = BatchWrite(counts.staged_hour, hours, len(counts.aggregates), rebuilt)
    log.info("hour %s: %s part rows written, ctr_batch_hourly rebuilt for hour(s) %s (%s rows)", counts.staged_hour,
             f"{write.part_rows:,}", hours, f"{rebuilt:,}")
    return write


def run_staged_hour(partition: HourPartition, store_url: str, rules: RepairRules | None = None) -> dict[str, Any]:
    """Count a staged hour and write it to the store at ``store_url`` (migrated first); the run's figures."""
    from include.ctr.migrate import migrate
    from include.ctr.store import connect

    counts = count_staged_hour(partition, rules if rules is not None else RepairRules.declared())
    with connect(store_url) as connection:
        migrate(connection)
        write = write_staged_hour(connection, counts)
    return {**counts.as_dict(), "write": write.as_dict()}


def main(argv: list[str] | None = None) -> int:
    from include.errors import PipelineError
    from include.ingest.config import load_ingest_config
    from include.ingest.staging import find_partition, partition_manifest_uri

    parser = argparse.ArgumentParser(prog="python -m include.ctr.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--hour", type=int, required=True, action="append",
                        help="an Avazu hour YYMMDDHH that is staged (repeat for more)")
    parser.add_argument("--staging-uri", help="where the hours are staged (default: include/config/ingest.yaml's)")
    parser.add_argument("--url", default=os.environ.get("POSTGRES_URL"),
                        help="the CTR store's postgresql:// URL (default: $POSTGRES_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.url:
        parser.exit(1, "error: no CTR store: set POSTGRES_URL (. scripts/local-env.sh) or pass --url\n")
    staging = args.staging_uri or load_ingest_config().staging_uri
    try:
        rules = RepairRules.declared()
        for hour in args.hour:
            partition = find_partition(staging, hour)
            if partition is None:
                raise HourNotStaged(f"hour {hour} is not staged: {partition_manifest_uri(staging, hour)} does not exist")
            print(json.dumps(run_staged_hour(partition, args.url, rules)))
    except PipelineError as error:
        parser.exit(75 if error.retriable else 1, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
