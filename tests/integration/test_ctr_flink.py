"""The Flink CTR job (flink/ctr_job.py) on the real stack: every closed window exact, through a
savepoint and a task manager killed mid-stream.

A session cluster of this module's own (the flink_cluster fixture of tests/integration/conftest.py:
devstack.flink, home under pytest's tmp, free ports) runs
the job on a topic of its own, writing into a PostgreSQL schema of its own in the ctr database
(created by the migrations). Hours are generated, staged and ingested with HourlyIngestor, as
Airflow does. The expected figures are pandas counts: of the generated file for the hours, of the
topic's records by their Kafka timestamps for the minutes.

The tests run in order on one job: each goes on from where the one before left it.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd
import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from devstack.flink import FlinkCluster, submit
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

pytestmark = pytest.mark.integration

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
            provision_ingest_topics(AdminClient(self.kafka_config), self.registry, topics)
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
        self.job_id = submit(self.cluster.settings, self.job_args, savepoint, self.postgres_url)
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

    def assert_closed_minutes_exact(self, some: bool = True) -> int:
        """ctr_minute against pandas over the topic's records whose arrival minute the watermark closed."""
        current = next(s.watermark_ms for s in self.rest.metrics(self.job_id).sources
                       if s.name.startswith("events_by_arrival"))
        # A restarted job has no watermark until new records come; minutes closed before stay closed.
        watermark = self.minute_watermark = max(current or 0, self.minute_watermark)
        self.settled()
        decoder = AvroDecoder(schema_fetcher(self.registry))
        consumer = Consumer(reader_config(self.kafka_config, f"test-ctr-flink-{uuid.uuid4().hex[:8]}"))
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


@pytest.fixture(scope="module")
def pipeline(flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path_factory):
    """Hours 0-2 ingested, the job started on them and caught up (the tests go on from here)."""
    suffix = uuid.uuid4().hex[:10]
    schema = f"ctr_flink_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(postgres_url, options=f"-c search_path={schema}") as connection:
        migrate(connection)
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(f"ctr_flink_raw_{suffix}", f"ctr_flink_dlq_{suffix}", f"ctr_flink_ckpt_{suffix}")
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    folder = tmp_path_factory.mktemp("avazu")
    generate(GeneratorSpec(ROWS, start_hour=HOURS[0], hours=len(HOURS), seed=21), folder / "train.csv.gz")
    stage_source(str(folder / "train.csv.gz"), str(folder / "staging"))
    good, bad, _ = read_all(str(folder / "train.csv.gz"))
    assert not bad
    rest = FlinkRestClient(flink_cluster.settings.rest_url)
    job_args = ["--topic", topics.raw, "--schema", schema, "--group-id", f"ctr_flink_{suffix}",
                "--checkpoint-interval", "2 s", "--parallelism", "2",
                # No partition goes idle during the test, so the watermark read is the windows' own.
                "--idle-timeout", "10 min", "--name", f"ctr-test-{suffix}"]
    ctr = CtrPipeline(flink_cluster, rest, postgres_url, schema, topics, kafka_config, registry,
                      str(folder / "staging"), pd.DataFrame(good), job_args)
    try:
        for hour in HOURS[:3]:
            ctr.ingest(hour)
        ctr.start()
        ctr.timings["catch_up_s"] = round(ctr.caught_up(), 1)
        yield ctr
    finally:
        for job in rest.jobs():
            if job.name == f"ctr-test-{suffix}" and job.state == "RUNNING":
                rest.cancel(job.id)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        print(f"\nCTR job timings: {ctr.timings}")


def _all_impressions(ctr: CtrPipeline, hour: int) -> int:
    rows = ctr.frame(f"SELECT impressions FROM ctr_hourly WHERE dimension = 'all' AND hour = '{hour_start(hour)}'")
    return int(rows["impressions"].sum()) if len(rows) else 0


def test_closed_hours_and_minutes_are_exact(pipeline):
    # The hour watermark is an hour behind the newest hour (2): hour 0 has closed, 1 and 2 are open.
    ctr = pipeline
    wait_for("hour 0 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[0]) > 0, 120)
    ctr.settled()
    assert_exact("ctr_hourly", ctr.frame("SELECT * FROM ctr_hourly"), ctr.hourly_truth(HOURS[:1]))
    # The three hours were written within seconds: their minutes close when the next test writes.
    ctr.assert_closed_minutes_exact(some=False)
    assert ctr.frame("SELECT * FROM ctr_late").empty


def test_after_a_savepoint_hours_stay_exact_and_a_closed_hour_read_first_is_late(pipeline):
    ctr = pipeline
    began = time.monotonic()
    savepoint = ctr.rest.stop_with_savepoint(ctr.job_id)
    ctr.timings["savepoint_s"] = round(time.monotonic() - began, 1)
    # While stopped: hour 0 again (its window fired before the savepoint), then hour 3. After the
    # resume hour 0's copy is read first, before any watermark: it must not reopen hour 0.
    ctr.since_start = 0
    ctr.wait_for_a_later_minute()
    again = ctr.ingest(HOURS[0], again=True)
    ctr.ingest(HOURS[3])
    ctr.start(savepoint)
    ctr.timings["resume_catch_up_s"] = round(ctr.caught_up(), 1)
    # Hour 3 moves the watermark to hour 2: hour 1 closes (its window came through the savepoint).
    wait_for("hour 1 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[1]) > 0, 120)
    ctr.settled()
    assert_exact("ctr_hourly", ctr.frame("SELECT * FROM ctr_hourly"), ctr.hourly_truth(HOURS[:2]))
    late = ctr.frame("SELECT window_kind, window_start, records FROM ctr_late WHERE window_kind = 'hour'")
    assert late.to_dict("records") == [{"window_kind": "hour", "window_start": hour_start(HOURS[0]), "records": again}]
    ctr.assert_closed_minutes_exact()


def test_a_task_manager_killed_mid_stream_recovers_from_its_checkpoint(pipeline):
    ctr = pipeline
    taskmanager = next(p for p in ctr.cluster.processes if p.name == "flink-taskmanager")
    read_before = ctr.since_start
    ctr.ingest(HOURS[4])
    # Killed as soon as it has read some of hour 4, before a checkpoint can cover all of it.
    wait_for("the job to read hour 4", lambda: min(
        s.records_in for s in ctr.rest.metrics(ctr.job_id).sources) > read_before, 60, interval=0.2)
    restored_before = ctr.rest.metrics(ctr.job_id).restored_checkpoint
    pid = taskmanager.pid()
    os.killpg(pid, signal.SIGKILL)
    began = time.monotonic()
    wait_for("the killed task manager to be gone", lambda: taskmanager.pid() is None, 30, interval=0.2)
    ctr.cluster.start(echo=lambda line: None)
    wait_for("the job to restore a checkpoint and run", lambda: (
        (m := ctr.rest.metrics(ctr.job_id)).state == "RUNNING" and m.restored_checkpoint != restored_before), 180)
    ctr.timings["recovery_s"] = round(time.monotonic() - began, 1)
    # Hour 4 moves the watermark to hour 3: hour 2 closes.
    wait_for("hour 2 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[2]) > 0, 120)
    ctr.settled()
    assert_exact("ctr_hourly", ctr.frame("SELECT * FROM ctr_hourly"), ctr.hourly_truth(HOURS[:3]))
    assert len(ctr.frame("SELECT * FROM ctr_late WHERE window_kind = 'hour'")) == 1
    ctr.assert_closed_minutes_exact()
