"""The CTR job's test pipeline, shared by the Flink tests: a topic, a PostgreSQL schema and generated
hours of its own, ingested as Airflow does, and the independent count every window is held to.

The expected figures are pandas counts: of the generated file for the hours, of the topic's records
by their Kafka timestamps for the minutes. The cluster is the ``flink_cluster`` fixture (tests/conftest.py).
The ingestion and the job sign in with ``kafka_config``; set-up and the checks with ``admin_config``
(the same, unless the broker has ACLs).
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from devstack.flink import FlinkCluster, flink_kafka_properties, submit
from include.avazu.generator import GeneratorSpec, generate
from include.avazu.reader import read_all
from include.ctr.flink_rest import FlinkRestClient
from include.ctr.migrate import migrate
from include.dead_letters import Origin
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_to_end, reader_config
from include.kafka.registry import registry_client, schema_fetcher
from include.kafka.wire import AvroDecoder
from tests.waiting import wait_for

HOURS = (14102100, 14102101, 14102102, 14102103, 14102104)
ROWS = 40_000  # over the five hours
DIMENSIONS = ("site_id", "app_id", "device_type", "banner_pos")
ORIGIN = Origin("test_ctr_flink", "manual__test", "ingest_hour", 1)
KEY = {"ctr_hourly": ["hour", "dimension", "value"], "ctr_minute": ["minute", "dimension", "value"]}


def hour_start(hour: int) -> datetime.datetime:
    return datetime.datetime.strptime(str(hour), "%y%m%d%H")


def expected_counts(rows: pd.DataFrame, window: str) -> pd.DataFrame:
    """impressions and clicks per (window, dimension, value), as the job's grouping sets count them."""
    frames = [rows.groupby(window).agg(impressions=("click", "size"), clicks=("click", "sum"))
              .reset_index().assign(dimension="all", value="")]
    for dimension in DIMENSIONS:
        values = rows[dimension].map(lambda v: "" if v is None or pd.isna(v) else str(v))
        frames.append(rows.assign(value=values).groupby([window, "value"])
                      .agg(impressions=("click", "size"), clicks=("click", "sum"))
                      .reset_index().assign(dimension=dimension))
    return pd.concat(frames)[[window, "dimension", "value", "impressions", "clicks"]]


def assert_exact(table: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    key = KEY[table]
    merged = (want.set_index(key).astype("int64").add_suffix("_want")
              .join(got.set_index(key).astype("int64").add_suffix("_got"), how="outer"))
    differ = merged[(merged["impressions_want"] != merged["impressions_got"])
                    | (merged["clicks_want"] != merged["clicks_got"])]
    assert differ.empty, f"{table}: {len(differ)} of {len(merged)} rows differ, e.g.\n{differ.head(10)}"


@dataclass
class CtrPipeline:
    """The job, its topic, its schema and what has been ingested so far."""

    cluster: FlinkCluster
    rest: FlinkRestClient
    postgres_url: str
    schema: str
    topics: IngestTopics
    kafka_config: dict
    registry: object
    staging: str
    truth: pd.DataFrame  # the generated file's rows
    job_args: list[str]
    admin_config: dict  # set-up and checks: the admin principal's on a broker with ACLs
    job_name: str = ""
    job_id: str = ""
    ingested: int = 0  # records in the topic
    last_arrival: float = 0.0  # when the last of them was written (epoch s)
    minute_watermark: int = 0  # the highest arrival watermark seen (ms)
    since_start: int = 0  # records the current run has to read (it resumed after the others)
    timings: dict[str, float] = field(default_factory=dict)

    def ingest(self, hour: int, again: bool = False) -> int:
        topics = self.topics
        if again:  # a checkpoint topic of its own, or the ingestor would skip the hour as done
            topics = IngestTopics(topics.raw, topics.dlq, f"{topics.checkpoints}_{uuid.uuid4().hex[:6]}")
            provision_ingest_topics(AdminClient(self.admin_config), self.registry, topics)
        config = load_ingest_config().with_topics(topics)
        result = HourlyIngestor(find_partition(self.staging, hour), config=config, kafka_config=self.kafka_config,
                                registry=self.registry, origin=ORIGIN).run()
        self.ingested += result.rows_produced
        self.since_start += result.rows_produced
        self.last_arrival = time.time()
        return result.rows_produced

    def wait_for_a_later_minute(self) -> None:
        """Sleep, if need be, so that what is ingested next arrives late enough (the minute
        lateness, 5 s) into a later minute than the records before it: their minutes then close."""
        later = (self.last_arrival // 60 + 1) * 60 + 6
        time.sleep(max(0.0, later - time.time()))

    def start(self, savepoint: str | None = None) -> None:
        began = time.monotonic()
        self.job_id = submit(self.cluster.settings, self.job_args, savepoint, self.postgres_url,
                             flink_kafka_properties(self.kafka_config))
        self.timings["submit_s"] = round(time.monotonic() - began, 1)
        wait_for("the job to run", lambda: self.rest.metrics(self.job_id).state == "RUNNING", 120)

    def caught_up(self) -> float:
        """Wait until both sources have read every record since the run started."""
        def done() -> bool:
            sources = self.rest.metrics(self.job_id).sources
            return len(sources) == 2 and all(s.records_in >= self.since_start for s in sources)
        began = time.monotonic()
        wait_for(f"both sources to read {self.since_start} records", done, 120, interval=0.5)
        return time.monotonic() - began

    def settled(self) -> None:
        """Wait for two checkpoints more: the sinks flush at each, so what has fired is in PostgreSQL."""
        completed = self.rest.metrics(self.job_id).completed_checkpoints
        wait_for("two more checkpoints", lambda: self.rest.metrics(self.job_id).completed_checkpoints >= completed + 2,
                 120, interval=0.5)

    def frame(self, query: str) -> pd.DataFrame:
        with psycopg.connect(self.postgres_url, options=f"-c search_path={self.schema}") as connection:
            cursor = connection.execute(query)
            return pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])

    def hourly_truth(self, hours: tuple[int, ...]) -> pd.DataFrame:
        rows = self.truth[self.truth["hour"].isin(hours)].assign(hour=lambda f: f["hour"].map(hour_start))
        return expected_counts(rows, "hour")

    def assert_exact_hours(self, hours: tuple[int, ...]) -> None:
        """ctr_hourly holds exactly the pandas count of ``hours`` (the closed ones), no other hour."""
        assert_exact("ctr_hourly", self.frame("SELECT * FROM ctr_hourly"), self.hourly_truth(hours))

    def wait_for_exact_hours(self, hours: tuple[int, ...], timeout: float = 180) -> None:
        """Wait until ctr_hourly holds exactly ``hours``' counts, then check it once more after a checkpoint.

        After a task manager is killed, a window that fired before the kill can be in PostgreSQL in
        part (the sinks also flush every 2 s, between checkpoints); the restored job fires it again,
        whole, once its watermark passes it again. One of its rows being there says nothing yet.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.assert_exact_hours(hours)
                break
            except AssertionError:
                time.sleep(1)
        self.settled()
        self.assert_exact_hours(hours)

    def assert_closed_minutes_exact(self, some: bool = True) -> int:
        """ctr_minute against pandas over the topic's records whose arrival minute the watermark closed."""
        current = next(s.watermark_ms for s in self.rest.metrics(self.job_id).sources
                       if s.name.startswith("events_by_arrival"))
        # A restarted job has no watermark until new records come; minutes closed before stay closed.
        watermark = self.minute_watermark = max(current or 0, self.minute_watermark)
        self.settled()
        decoder = AvroDecoder(schema_fetcher(self.registry))
        consumer = Consumer(reader_config(self.admin_config, f"test-ctr-flink-{uuid.uuid4().hex[:8]}"))
        try:
            records = [{**decoder.decode(m.value()), "arrival_ms": m.timestamp()[1]}
                       for m in read_to_end(consumer, [self.topics.raw], commit=False, batch=10_000)]
        finally:
            consumer.close()
        assert len(records) == self.ingested
        arrivals = pd.DataFrame(records)
        arrivals["minute_ms"] = arrivals["arrival_ms"] // 60_000 * 60_000
        # The job writes a minute only once it has fired, so every minute in the table is closed too:
        # the REST metrics' watermark (refreshed every 10 s) can lag the one that fired it.
        written = self.frame("SELECT max(minute) AS latest FROM ctr_minute")["latest"].dropna()
        if len(written):
            latest = int(pd.Timestamp(written.iloc[0]).value // 1_000_000)
            watermark = max(watermark, latest + 60_000 - 1)
        closed = arrivals[arrivals["minute_ms"] + 60_000 - 1 <= watermark]
        closed = closed.assign(minute=pd.to_datetime(closed["minute_ms"], unit="ms").dt.to_pydatetime())
        assert len(closed) or not some, "no minute has closed"
        assert_exact("ctr_minute", self.frame("SELECT * FROM ctr_minute"), expected_counts(closed, "minute"))
        late = self.frame("SELECT * FROM ctr_late WHERE window_kind = 'minute'")
        assert late.empty, f"records counted late by arrival minute:\n{late}"
        return len(closed)


@contextmanager
def logged_lines(*logger_names: str) -> Iterator[list[str]]:
    """The messages the named loggers log meanwhile (a task's log), whatever Airflow's logging does with them."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    loggers = [logging.getLogger(name) for name in logger_names]
    handler, levels = Collect(logging.INFO), [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


@contextmanager
def ctr_pipeline(prefix: str, flink_cluster: FlinkCluster, postgres_url: str, kafka_config: dict,
                 schema_registry_url: str, folder: Path, admin_config: dict | None = None,
                 group_prefix: str | None = None) -> Iterator[CtrPipeline]:
    """A pipeline named ``<prefix>_<suffix>``, nothing ingested and no job started; dropped afterwards.

    The job's consumer groups are ``<group_prefix or prefix>_<suffix>.hourly`` and ``.minute``.
    """
    admin_config = admin_config or kafka_config
    suffix = uuid.uuid4().hex[:10]
    schema = f"{prefix}_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(postgres_url, options=f"-c search_path={schema}") as connection:
        migrate(connection)
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(f"{prefix}_raw_{suffix}", f"{prefix}_dlq_{suffix}", f"{prefix}_ckpt_{suffix}")
    provision_ingest_topics(AdminClient(admin_config), registry, topics)
    generate(GeneratorSpec(ROWS, start_hour=HOURS[0], hours=len(HOURS), seed=21), folder / "train.csv.gz")
    stage_source(str(folder / "train.csv.gz"), str(folder / "staging"))
    good, bad, _ = read_all(str(folder / "train.csv.gz"))
    assert not bad
    rest = FlinkRestClient(flink_cluster.settings.rest_url)
    job_name = f"ctr-test-{suffix}"
    job_args = ["--topic", topics.raw, "--schema", schema, "--group-id", f"{group_prefix or prefix}_{suffix}",
                "--checkpoint-interval", "2 s", "--parallelism", "2",
                # No partition goes idle during the test, so the watermark read is the windows' own.
                "--idle-timeout", "10 min", "--name", job_name]
    ctr = CtrPipeline(flink_cluster, rest, postgres_url, schema, topics, kafka_config, registry,
                      str(folder / "staging"), pd.DataFrame(good), job_args, admin_config, job_name)
    try:
        yield ctr
    finally:
        for job in rest.jobs():
            if job.name == job_name and job.state == "RUNNING":
                rest.cancel(job.id)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        print(f"\nCTR job timings: {ctr.timings}")
