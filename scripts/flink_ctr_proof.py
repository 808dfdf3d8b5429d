"""Prove the Flink CTR job exact on the local stack: python -m scripts.flink_ctr_proof [--rows N]

On topics and a PostgreSQL database of its own it generates an Avazu file of five hours, ingests
three with the project's HourlyIngestor, runs flink/ctr_job.py on the session cluster until it has
caught up, stops it with a savepoint, ingests two more hours, resumes from the savepoint, then
ingests hour 1 again (a late hour). Every closed window is then compared, hour x dimension x
value, with pandas over the same rows (the generated file for hours, the topic's records and
timestamps for minutes); hour 1's second copy must be in ctr_late and nowhere else. Prints the
timings (submit, catch-up, savepoint) and one line per check; exits 1 on the first difference.

Needs the local stack (make stack-start), .venv-flink (make flink-venv), a PostgreSQL server
(CTR_PG_HOST/PORT/USER, password in $CTR_JDBC_PASSWORD) whose user may create databases.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from devstack.flink import FlinkCluster, submit
from include.avazu.generator import GeneratorSpec, generate
from include.avazu.reader import read_all
from include.ctr.flink_rest import FlinkRestClient
from include.dead_letters import Origin
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_to_end, reader_config
from include.kafka.registry import registry_client, schema_fetcher
from include.kafka.wire import AvroDecoder

ROOT = Path(__file__).resolve().parent.parent
TABLES_SQL = ROOT / "include" / "ctr" / "tables.sql"
HOURS = (14102100, 14102101, 14102102, 14102103, 14102104)
DIMENSIONS = ("site_id", "app_id", "device_type", "banner_pos")
ORIGIN = Origin("flink_ctr_proof", "manual", "ingest_hour", 1)


class ProofFailed(AssertionError):
    pass


class Postgres:
    """psql against one database (the project's venv has no PostgreSQL driver; the job has JDBC)."""

    def __init__(self, host: str, port: int, user: str, database: str):
        self.host, self.port, self.user, self.database = host, port, user, database
        self.psql = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
        if self.psql is None:
            raise SystemExit("psql is not installed (Debian: postgresql-client)")

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def run(self, sql: str, database: str | None = None) -> str:
        result = subprocess.run(
            [str(self.psql), "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database or self.database,
             "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": os.environ["CTR_JDBC_PASSWORD"]})
        if result.returncode != 0:
            raise SystemExit(f"psql on {self.host}:{self.port}/{database or self.database} failed: {result.stderr.strip()}")
        return result.stdout

    def frame(self, query: str) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(self.run(f"COPY ({query}) TO STDOUT WITH CSV HEADER")),
                           keep_default_na=False, dtype={"value": str})


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 300.0) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise ProofFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - began


def expected_counts(rows: pd.DataFrame, window: str) -> pd.DataFrame:
    """impressions and clicks per (window, dimension, value), as the job's grouping sets compute them."""
    frames = [rows.groupby(window).agg(impressions=("click", "size"), clicks=("click", "sum"))
              .reset_index().assign(dimension="all", value="")]
    for dimension in DIMENSIONS:
        grouped = (rows.assign(value=rows[dimension].map(lambda v: "" if v is None or pd.isna(v) else str(v)))
                   .groupby([window, "value"]).agg(impressions=("click", "size"), clicks=("click", "sum"))
                   .reset_index().assign(dimension=dimension))
        frames.append(grouped)
    return pd.concat(frames)[[window, "dimension", "value", "impressions", "clicks"]]


def compare(name: str, got: pd.DataFrame, want: pd.DataFrame, key: list[str]) -> None:
    got = got.astype({k: str for k in key}).set_index(key).sort_index()
    want = want.astype({k: str for k in key}).set_index(key).sort_index()
    merged = want.join(got, how="outer", suffixes=("_want", "_got"))
    differ = merged[(merged["impressions_want"] != merged["impressions_got"]) | (merged["clicks_want"] != merged["clicks_got"])]
    if len(differ):
        raise ProofFailed(f"{name}: {len(differ)} of {len(merged)} rows differ, e.g.\n{differ.head(10)}")
    print(f"  ok  {name}: {len(merged)} rows (window x dimension x value) exact, "
          f"{int(want.xs('all', level='dimension')['impressions'].sum())} records")


def hour_stamp(hour: int) -> str:
    return pd.to_datetime(str(hour), format="%y%m%d%H").strftime("%Y-%m-%d %H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=250_000, help="rows in the generated file (five hours)")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the proof's database")
    args = parser.parse_args(argv)
    if "CTR_JDBC_PASSWORD" not in os.environ:
        raise SystemExit("set CTR_JDBC_PASSWORD to the PostgreSQL password of CTR_PG_USER")
    suffix = uuid.uuid4().hex[:8]
    kafka = {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}
    registry = registry_client(os.environ["SCHEMA_REGISTRY_URL"])
    server = Postgres(os.environ.get("CTR_PG_HOST", "127.0.0.1"), int(os.environ.get("CTR_PG_PORT", "5432")),
                      os.environ.get("CTR_PG_USER", "postgres"), f"ctr_proof_{suffix}")
    server.run(f"CREATE DATABASE {server.database}", database="postgres")
    server.run(TABLES_SQL.read_text())

    topics = IngestTopics(f"flinkdev-{suffix}-ad_events_raw", f"flinkdev-{suffix}-dlq", f"flinkdev-{suffix}-ckpt")
    provision_ingest_topics(AdminClient(kafka), registry, topics)
    work = Path(tempfile.mkdtemp(prefix="flink-ctr-proof-"))
    generate(GeneratorSpec(args.rows, hours=len(HOURS), seed=21), work / "train.csv.gz")
    stage_source(str(work / "train.csv.gz"), str(work / "staging"))
    config = load_ingest_config().with_topics(topics)
    produced = 0

    def ingest(hours, ingest_topics=topics) -> None:
        nonlocal produced
        for hour in hours:
            result = HourlyIngestor(find_partition(str(work / "staging"), hour), config=config.with_topics(ingest_topics),
                                    kafka_config=kafka, registry=registry, origin=ORIGIN).run()
            produced += result.rows_produced
            print(f"  ingested hour {hour}: {result.rows_produced} rows at {result.rows_per_s:,.0f} rows/s")

    cluster = FlinkCluster()
    cluster.start(echo=lambda line: None)
    rest = FlinkRestClient(cluster.settings.rest_url)
    job_args = ["--topic", topics.raw, "--jdbc-url", server.jdbc_url, "--jdbc-user", server.user,
                "--group-id", f"flinkdev-{suffix}", "--checkpoint-interval", "5 s",
                "--parallelism", str(args.parallelism), "--name", f"ctr-proof-{suffix}"]

    def run_until_caught_up(savepoint: str | None, expected: int) -> str:
        began = time.monotonic()
        job_id = submit(cluster.settings, job_args, savepoint)
        submitted = time.monotonic() - began
        running = wait_for("the job to run", lambda: rest.metrics(job_id).state == "RUNNING", 120)
        # Each of the two sources reads every record (counts start at 0 again after a restore).
        caught_up = wait_for(f"both sources to read {expected} records",
                             lambda: all(s.records_in >= expected for s in rest.metrics(job_id).sources)
                             and len(rest.metrics(job_id).sources) == 2, 600)
        print(f"  job {job_id}: submitted in {submitted:.1f} s, running {running:.1f} s later, "
              f"caught up with {expected} records in {caught_up:.1f} s more "
              f"({2 * expected / max(caught_up, 1e-9):,.0f} records/s over both sources)")
        return job_id

    try:
        print(f"Proof on topic {topics.raw}, database {server.database}, {args.rows} generated rows")
        ingest(HOURS[:3])
        job_id = run_until_caught_up(None, produced)
        began = time.monotonic()
        savepoint = rest.stop_with_savepoint(job_id)
        print(f"  stopped with savepoint {savepoint} in {time.monotonic() - began:.1f} s")
        first_run = produced
        ingest(HOURS[3:])
        job_id = run_until_caught_up(savepoint, produced - first_run)
        # Hour 1 again, from a checkpoint topic of its own: its window has long fired, so late.
        late_topics = IngestTopics(topics.raw, topics.dlq, f"flinkdev-{suffix}-ckpt-again")
        provision_ingest_topics(AdminClient(kafka), registry, late_topics)
        before_late = produced
        ingest(HOURS[:1], late_topics)
        late_rows = produced - before_late
        wait_for("the late hour to be read", lambda: all(
            s.records_in >= produced - first_run for s in rest.metrics(job_id).sources), 300)

        good, _, _ = read_all(str(work / "train.csv.gz"))
        rows = pd.DataFrame(good)
        rows["hour_start"] = rows["hour"].map(hour_stamp)
        # The watermark is the newest hour minus an hour: hours 1-3 have fired, 4 and 5 are open.
        closed = [hour_stamp(h) for h in HOURS[:3]]
        want_hourly = expected_counts(rows[rows["hour_start"].isin(closed)], "hour_start").rename(columns={"hour_start": "hour"})
        query = "SELECT to_char(hour, 'YYYY-MM-DD HH24:MI:SS') AS hour, dimension, value, impressions, clicks FROM ctr_hourly"
        total = int(want_hourly.query("dimension == 'all'")["impressions"].sum())
        # Window results reach PostgreSQL at the sink's next flush (2 s) or checkpoint.
        wait_for("ctr_hourly to hold hours 1-3", lambda: int(server.run(
            "SELECT coalesce(sum(impressions), 0) FROM ctr_hourly WHERE dimension = 'all'")) == total, 120)
        compare("ctr_hourly, hours 1-3 (one window before the savepoint, two after)", server.frame(query), want_hourly,
                ["hour", "dimension", "value"])

        late = server.frame("SELECT window_kind, to_char(window_start, 'YYYY-MM-DD HH24:MI:SS') AS window_start, records FROM ctr_late")
        late_hours = late[late["window_kind"] == "hour"]
        if late_hours.to_dict("records") != [{"window_kind": "hour", "window_start": closed[0], "records": late_rows}]:
            raise ProofFailed(f"ctr_late should hold hour 1's {late_rows} late records once, holds:\n{late_hours}")
        print(f"  ok  ctr_late: hour 1 ingested again = {late_rows} late records, not in ctr_hourly")

        # Minutes: pandas over the topic's records by their Kafka timestamps; a minute is closed
        # once the arrival watermark has passed its end, and only closed minutes are in the table.
        watermark = next(s.watermark_ms for s in rest.metrics(job_id).sources if s.name.startswith("events_by_arrival"))
        decoder = AvroDecoder(schema_fetcher(registry))
        consumer = Consumer(reader_config(kafka, f"flinkdev-{suffix}-proof"))
        try:
            records = [{**decoder.decode(m.value()), "arrival_ms": m.timestamp()[1]}
                       for m in read_to_end(consumer, [topics.raw], commit=False)]
        finally:
            consumer.close()
        arrivals = pd.DataFrame(records)
        arrivals["minute_ms"] = arrivals["arrival_ms"] // 60_000 * 60_000
        arrivals = arrivals[arrivals["minute_ms"] + 60_000 - 1 <= watermark]
        arrivals["minute"] = pd.to_datetime(arrivals["minute_ms"], unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S")
        minute_query = "SELECT to_char(minute, 'YYYY-MM-DD HH24:MI:SS') AS minute, dimension, value, impressions, clicks FROM ctr_minute"
        compare("ctr_minute, the minutes the arrival watermark has closed", server.frame(minute_query),
                expected_counts(arrivals, "minute"), ["minute", "dimension", "value"])
        print(f"  {len(late) - len(late_hours)} minute(s) in ctr_late; {len(records)} records in the topic")
        rest.stop_with_savepoint(job_id)
        return 0
    except ProofFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        for job in rest.jobs():
            if job.name == f"ctr-proof-{suffix}" and job.state == "RUNNING":
                rest.cancel(job.id)
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            server.run(f"DROP DATABASE IF EXISTS {server.database} WITH (FORCE)", database="postgres")


if __name__ == "__main__":
    sys.exit(main())
