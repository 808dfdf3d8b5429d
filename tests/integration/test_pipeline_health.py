"""pipeline_health's checks on the real broker and registry: each passes on a healthy pipeline and
fails, with its sentence, on one broken on purpose.

Every test ingests a small generated file into topics of its own (sandbox copies of the declared
ones) and runs the checks on those, with the lag window and the report in a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from confluent_kafka.schema_registry import Schema

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.dead_letters import Origin
from include.health.checks import CHECKS, HealthInputs, run_check
from include.health.config import load_health_config
from include.health.lag import sample_groups
from include.health.metrics import push_metrics
from include.health.report import summary_table, write_report
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_topic
from include.kafka_admin.sandbox import sandbox_catalog
from include.paths import SCHEMAS_DIR

pytestmark = pytest.mark.integration

HOURS = (14102100, 14102101)
ORIGIN = Origin("avazu_hourly_ingest", "manual__health", "ingest_hour", 1)


@pytest.fixture(scope="module")
def staging(tmp_path_factory):
    folder = tmp_path_factory.mktemp("health")
    source = folder / "train.csv.gz"
    generate(GeneratorSpec(6_000, hours=len(HOURS), seed=14, fault_rates={kind: 0.001 for kind in FaultKind}), source)
    stage_source(str(source), str(folder / "staging"))
    return str(folder / "staging")


@dataclasses.dataclass
class Pipeline:
    """A small ingested pipeline on topics of its own, and the inputs its checks get."""

    topics: IngestTopics
    inputs: HealthInputs
    results: dict

    def check(self, name: str):
        self.inputs.cache.clear()
        self.inputs.now = time.time()
        return run_check(name, self.inputs)


@pytest.fixture
def pipeline(staging, kafka_config, registry_client, tmp_path, ctr_store):
    suffix = uuid.uuid4().hex[:10]
    topics = IngestTopics(f"health_raw_{suffix}", f"health_dlq_{suffix}", f"health_ckpt_{suffix}")
    provision_ingest_topics(AdminClient(kafka_config), registry_client, topics)
    ingest = load_ingest_config().with_topics(topics).replace("test", staging_uri=staging, chunk_rows=1_000)
    results = {hour: HourlyIngestor(find_partition(staging, hour), config=ingest, kafka_config=kafka_config,
                                    registry=registry_client, origin=ORIGIN).run() for hour in HOURS}
    config = load_health_config().replace(
        # A standstill counts at once here: the tests sample seconds apart, not an hour.
        lag={"groups": (f"health-{suffix}-*",), "exclude": (), "breach_samples": 2, "window_samples": 6,
             "stall_after_s": 0.0},
        dlq={"max_ratio": 0.05, "min_rows": 100},
        throughput={"ingest_min_rows": 100, "ingest_min_rows_per_s": 1.0, "processor_min_records_per_s": 0.0},
        report_uri=str(tmp_path / "reports"), state_uri=str(tmp_path / "state.json"))
    catalog = sandbox_catalog(topics.as_dict())
    inputs = HealthInputs(config=config, kafka_config=kafka_config, registry=registry_client, ingest=ingest, catalog=catalog,
                          runs=[r.run_summary() for r in reversed(results.values())], store_url=ctr_store.url)
    return Pipeline(topics, inputs, results)


def test_every_check_passes_on_a_healthy_pipeline_and_the_report_shows_them(pipeline, kafka_config, tmp_path):
    group = _group(pipeline, "healthy")
    _consume_all_and_commit(kafka_config, group, pipeline.topics.raw)
    outcomes = [pipeline.check(name) for name in CHECKS]
    assert [(o.check, o.status) for o in outcomes if not o.ok] == []
    by_name = {o.check: o for o in outcomes}
    lag_rows = by_name["consumer_lag"].rows
    assert {r["partition"] for r in lag_rows} == {0, 1, 2} and {r["lag"] for r in lag_rows} == {0}
    reconciled = {r["hour"]: r for r in by_name["reconciliation"].rows}
    for hour, result in pipeline.results.items():
        assert reconciled[hour]["expected"] == result.rows_read
        assert reconciled[hour]["staged"] == f"manifest {result.rows_read:,} rows"
        assert reconciled[hour]["raw"] == result.rows_produced and reconciled[hour]["dlq"] == result.rows_dead_lettered
    assert {r["hour"] for r in by_name["dlq_ratio"].rows} == set(HOURS)
    assert sum(1 for r in by_name["throughput"].rows if r["job"] == "ingestion") == len(HOURS)

    location = write_report(outcomes, str(tmp_path / "reports"), "manual__healthy", dlq_threshold=0.05)
    page = (tmp_path / "reports" / "manual__healthy" / "report.html").read_text()
    assert location.html.endswith("manual__healthy/report.html")
    assert f"All {len(CHECKS)} checks passed." in page and pipeline.topics.raw in page
    for plot in ("lag.png", "dlq_ratio.png"):
        assert (tmp_path / "reports" / "manual__healthy" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "manual__healthy/lag.png" in (tmp_path / "reports" / "latest.html").read_text()
    table = summary_table(outcomes)
    assert all(name in table for name in CHECKS) and "FAIL" not in table


def test_lag_in_seconds_is_the_age_of_the_oldest_record_not_consumed(pipeline, kafka_config):
    topic = f"{pipeline.topics.raw}_lag"
    _create_topic(kafka_config, topic)
    produced_at = _produce_one_per_second(kafka_config, topic, 4)
    group = _group(pipeline, "lagging")
    _commit(kafka_config, group, topic, 0, 1)  # consumed record 0; records 1..3 wait
    samples = sample_groups(pipeline.inputs.admin, kafka_config, pipeline.inputs.config.lag)
    (key, sample), = [(k, s) for k, s in samples.items() if k.topic == topic]
    assert sample.lag == 3
    assert abs(sample.lag_seconds - (sample.at - produced_at[1])) < 1.0
    # Caught up: 0 records and 0 s, however long nothing has been produced.
    _commit(kafka_config, group, topic, 0, 4)
    sample = [s for k, s in sample_groups(pipeline.inputs.admin, kafka_config, pipeline.inputs.config.lag).items()
              if k.topic == topic][0]
    assert (sample.lag, sample.lag_seconds) == (0, 0.0)


def test_a_stalled_group_fails_only_once_the_breach_persists_then_shows_as_stopped(pipeline, kafka_config):
    group = _group(pipeline, "stalled")
    idle = _group(pipeline, "idle")
    _consume_all_and_commit(kafka_config, idle, pipeline.topics.raw)  # caught up, no member: never a STOP
    _commit(kafka_config, group, pipeline.topics.raw, 0, 5)
    member = _Member(kafka_config, group, pipeline.topics.raw)
    try:
        member.wait_until_assigned()
        first = pipeline.check("consumer_lag")
        second = pipeline.check("consumer_lag")
        assert first.ok and second.ok  # one sample cannot stall; one breach is not yet a failure
        third = pipeline.check("consumer_lag")
        assert not third.ok
        assert f"group {group} on {pipeline.topics.raw}[0] is STALL for the last 2 samples" in third.summary
        assert "member(s) (state STABLE) but its committed offset 5 has not moved" in third.summary
    finally:
        member.stop()
    pipeline.check("consumer_lag")
    stopped = pipeline.check("consumer_lag")
    assert not stopped.ok and f"group {group} on {pipeline.topics.raw}[0] is STOP" in stopped.summary
    assert "it has no member (state EMPTY)" in stopped.summary
    assert all(r["status"] == "OK" for r in stopped.rows if r["group"] == idle)
    assert "kafka-consumer-groups --describe" in stopped.summary


def test_a_group_whose_records_retention_deleted_fails_at_once_as_data_lost(pipeline, kafka_config):
    group = _group(pipeline, "lost")
    _commit(kafka_config, group, pipeline.topics.raw, 0, 2)
    _delete_records(kafka_config, pipeline.topics.raw, 0, 10)
    outcome = pipeline.check("consumer_lag")
    assert not outcome.ok
    assert (f"group {group} on {pipeline.topics.raw}[0] is LOST: its committed offset 2 is below the log start 10: "
            "8 records were deleted by retention before it read them") in outcome.summary


def test_an_hour_over_the_dlq_ratio_fails_naming_the_hour_and_the_ratio(pipeline):
    hour = HOURS[0]
    result = pipeline.results[hour]
    ratio = result.rows_dead_lettered / result.rows_read
    pipeline.inputs.config = pipeline.inputs.config.replace(dlq={"max_ratio": ratio / 2})
    outcome = pipeline.check("dlq_ratio")
    assert not outcome.ok
    assert (f"hour {hour} dead-lettered {result.rows_dead_lettered:,} of its {result.rows_read:,} rows "
            f"({ratio:.2%}, limit {ratio / 2:.2%}") in outcome.summary
    assert f"look at {pipeline.topics.dlq} (header ingest.hour)" in outcome.summary


def test_records_in_the_dlq_that_are_not_the_ingestions_count_to_no_hour_and_are_named(pipeline, kafka_config):
    producer = Producer(kafka_config)
    for value in (b"\x00\x00\x00\x00\x63\x02ab", b"plain text", None):
        producer.produce(pipeline.topics.dlq, value=value, key=b"by-hand")
    assert producer.flush(30) == 0
    outcome = pipeline.check("reconciliation")
    assert outcome.ok, outcome.summary
    assert (f"; 3 record(s) in {pipeline.topics.dlq} without an ingest.hour header are not the ingestion's and "
            "count to no hour") in outcome.summary
    assert {r["hour"]: r["dlq"] for r in outcome.rows} == {h: r.rows_dead_lettered for h, r in pipeline.results.items()}
    assert pipeline.check("dlq_ratio").ok


def test_an_hour_with_records_deleted_or_doubled_does_not_reconcile(pipeline, kafka_config):
    hour = HOURS[1]
    staged = pipeline.results[hour].rows_read
    copies = [r for r in read_topic(kafka_config, pipeline.topics.raw) if r.partition == 1]
    doubled = [r for r in copies if _hour_of(pipeline, r.value) == hour]
    producer = Producer(kafka_config)
    for record in doubled:
        producer.produce(pipeline.topics.raw, record.value, record.key, partition=1)
    assert producer.flush(30) == 0
    outcome = pipeline.check("reconciliation")
    assert not outcome.ok
    assert (f"hour {hour} generation 0: {staged:,} rows ingested (manifest {staged:,} rows) but Kafka holds "
            f"{staged + len(doubled):,}") in outcome.summary
    assert f"{len(doubled):,} more than ingested (duplicated?)" in outcome.summary

    # Retention (or a hand) deleting the start of a partition: the hours there go missing.
    on_zero = [r for r in read_topic(kafka_config, pipeline.topics.raw) if r.partition == 0]
    cut = 50
    lost = sum(1 for r in on_zero if r.offset < cut and _hour_of(pipeline, r.value) == HOURS[0])
    _delete_records(kafka_config, pipeline.topics.raw, 0, cut)
    outcome = pipeline.check("reconciliation")
    assert f"hour {HOURS[0]} generation 0: {pipeline.results[HOURS[0]].rows_read:,} rows ingested" in outcome.summary
    assert f"{lost:,} missing" in outcome.summary


def test_an_hour_ingested_from_a_second_source_reconciles_with_both_sources_rows(pipeline, kafka_config, registry_client,
                                                                                   tmp_path):
    # A demo file first, the real file later: both write hour 14102100; each checkpoint accounts for its rows.
    other = tmp_path / "other.csv.gz"
    generate(GeneratorSpec(1_500, hours=1, seed=99, fault_rates={FaultKind.BAD_HOUR: 0.01}), other)
    stage_source(str(other), str(tmp_path / "other-staging"))
    second = HourlyIngestor(find_partition(str(tmp_path / "other-staging"), HOURS[0]),
                            config=pipeline.inputs.ingest.replace("second source", staging_uri=str(tmp_path / "other-staging")),
                            kafka_config=kafka_config, registry=registry_client, origin=ORIGIN).run()
    outcome = pipeline.check("reconciliation")
    assert outcome.ok, outcome.summary
    row = next(r for r in outcome.rows if r["hour"] == HOURS[0])
    assert row["sources"] == 2 and row["expected"] == pipeline.results[HOURS[0]].rows_read + second.rows_read
    assert row["raw"] + row["dlq"] == row["expected"]


def test_a_topic_config_changed_by_hand_is_drift(pipeline, kafka_config):
    admin = AdminClient(kafka_config)
    resource = ConfigResource(ResourceType.TOPIC, pipeline.topics.raw, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result()
    deadline = time.monotonic() + 20
    while (outcome := pipeline.check("topic_drift")).ok and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not outcome.ok
    assert f"{pipeline.topics.raw}: retention.ms is 60000, declared 86400000" in outcome.summary
    assert "run kafka_provisioning with fix_drift" in outcome.summary


def test_a_schema_registered_by_hand_is_registry_drift(pipeline, registry_client):
    subject = f"{pipeline.topics.raw}-value"
    schema = json.loads((SCHEMAS_DIR / "ad_event.avsc").read_text())
    schema["fields"].append({"name": "campaign_note", "type": ["null", "string"], "default": None})
    registry_client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
    outcome = pipeline.check("registry_drift")
    assert not outcome.ok
    assert (f"subject {subject}: latest version 2 is not ad_event.avsc (version 1) (it adds campaign_note)"
            in outcome.summary)


def test_isr_below_min_insync_and_a_stopped_broker_fail_the_broker_check(pipeline, kafka_config, tmp_path):
    strict = f"{pipeline.topics.raw}_strict"
    _create_topic(kafka_config, strict, config={"min.insync.replicas": "2"})
    spec = dataclasses.replace(pipeline.inputs.catalog[pipeline.topics.raw], name=strict)
    pipeline.inputs.catalog = dataclasses.replace(pipeline.inputs.catalog,
                                                  topics=(*pipeline.inputs.catalog.topics, spec))
    outcome = pipeline.check("brokers")
    assert not outcome.ok
    assert ("partitions with fewer in-sync replicas than min.insync.replicas, where producers with acks=all are "
            f"refused: {strict} [0, 1, 2] (min.insync.replicas=2)" in outcome.summary)

    # A broker of its own, started and then stopped: the check names the address it could not reach.
    from devstack import Stack, StackSettings
    from devstack.probes import free_ports

    kafka_port, controller_port, metrics_port = free_ports(3)
    settings = StackSettings(home=tmp_path / "devstack", kafka_port=kafka_port, kafka_controller_port=controller_port,
                             kafka_metrics_port=metrics_port)
    stack = Stack(settings)
    stack.start(["kafka"], echo=lambda line: None)
    address = stack.services["kafka"].endpoint()
    pipeline.inputs.kafka_config = {"bootstrap.servers": address}
    pipeline.inputs.__dict__.pop("admin", None)
    try:
        assert pipeline.check("brokers").ok  # it answers (the sandbox topics are not on it)
    finally:
        stack.stop(["kafka"], echo=lambda line: None)
    pipeline.inputs.__dict__.pop("admin", None)
    down = pipeline.check("brokers")
    assert not down.ok and down.summary.startswith(f"no broker answered at {address} within 15 s")


def test_the_metrics_reach_prometheus_beside_the_brokers_jmx_metrics(pipeline, kafka_config, local_stack):
    outcomes = [pipeline.check(name) for name in ("dlq_ratio", "reconciliation", "brokers")]
    job = f"pipeline_health_test_{uuid.uuid4().hex[:8]}"
    pushed = push_metrics(local_stack["PUSHGATEWAY_URL"], outcomes, job=job)
    assert pushed >= len(outcomes)
    produced = sum(r.rows_produced for r in pipeline.results.values())
    prometheus = local_stack["PROMETHEUS_URL"]
    jmx = _query_until(prometheus, f'sum(kafka_server_brokertopicmetrics_messagesin_total{{topic="{pipeline.topics.raw}"}})',
                       lambda value: value >= produced)
    assert jmx >= produced
    ok = _query_until(prometheus, f'sum(avazu_pipeline_check_ok{{job="{job}"}})', lambda value: value == len(outcomes))
    assert ok == len(outcomes)
    success = _query_until(prometheus, f'avazu_pipeline_last_success_timestamp_seconds{{job="{job}"}}',
                           lambda value: value > 0)
    assert abs(success - time.time()) < 120


# --- helpers -------------------------------------------------------------------------------------

def _group(pipeline: Pipeline, name: str) -> str:
    pattern = pipeline.inputs.config.lag.groups[0]
    return pattern.replace("*", name)


def _hour_of(pipeline: Pipeline, value: bytes) -> int:
    from include.kafka.wire import AvroDecoder

    return AvroDecoder(pipeline.inputs.fetch_schema).decode(value)["hour"]


def _create_topic(kafka_config, topic: str, partitions: int = 3, config: dict | None = None) -> None:
    admin = AdminClient(kafka_config)
    admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result()
    deadline = time.monotonic() + 10
    while topic not in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.2)


def _produce_one_per_second(kafka_config, topic: str, count: int) -> list[float]:
    producer = Producer(kafka_config)
    times = []
    for i in range(count):
        times.append(time.time())
        producer.produce(topic, f"record {i}".encode(), partition=0)
        producer.flush(10)
        time.sleep(1.0)
    return times


def _commit(kafka_config, group: str, topic: str, partition: int, offset: int) -> None:
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    consumer.close()


def _consume_all_and_commit(kafka_config, group: str, topic: str) -> None:
    admin = AdminClient(kafka_config)
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    ends = []
    for partition in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ends.append(TopicPartition(topic, partition, high))
    consumer.commit(offsets=ends, asynchronous=False)
    consumer.close()


def _delete_records(kafka_config, topic: str, partition: int, before: int) -> None:
    admin = AdminClient(kafka_config)
    futures = admin.delete_records([TopicPartition(topic, partition, before)])
    for future in futures.values():
        future.result()


class _Member:
    """A consumer that stays in its group (it polls) but never commits: a stalled processor."""

    def __init__(self, kafka_config, group: str, topic: str):
        self.consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "max.poll.interval.ms": 60000,
                                  "session.timeout.ms": 10000})
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self.consumer.subscribe([topic], on_assign=lambda c, parts: self.assigned.set())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            self.consumer.poll(0.2)
        self.consumer.close()

    def wait_until_assigned(self, timeout: float = 30.0) -> None:
        assert self.assigned.wait(timeout), "the stalled consumer never joined its group"

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(20)


def _query_until(prometheus: str, query: str, accept, timeout: float = 60.0) -> float:
    """The value of a PromQL query (one series) once ``accept`` takes it, as the seed's verification script asks."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        if result:
            last = float(result[0]["value"][1])
            if accept(last):
                return last
        time.sleep(1.0)
    raise AssertionError(f"Prometheus at {prometheus} never answered {query!r} acceptably (last value {last})")
