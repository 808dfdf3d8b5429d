"""Stream = batch on the real stack: the Flink job and ctr_batch agree exactly over the same ingested hours,
pipeline_health's ctr_reconciliation says so, and once one stream row is changed it fails naming the hour, the
dimension and value and the difference.

Four generated hours with every kind of broken row are ingested into topics of the module's own, each followed by
the DLQ reprocessing, whose repaired rows go back to the raw topic before the next hour comes (as the scheduler's
dlq_reprocessing does when dead letters arrive). Then the CTR job runs on the topic on a session cluster of the
module's own (tests/integration/conftest.py), and ctr_batch computes the same hours from the staged files, both
into a CTR schema of the module's own. The job's hour watermark trails the newest hour by an hour: hours 0 and 1
close, 2 and 3 stay open.

The tests run in order on one pipeline: the second changes a row of the first's.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from devstack.flink import submit
from include.avazu.generator import GeneratorSpec, generate
from include.ctr.batch import hour_timestamp, run_staged_hour
from include.ctr.flink_rest import FlinkRestClient
from include.dead_letters import Origin
from include.dlq.config import load_dlq_config
from include.dlq.reprocessor import DlqReprocessor
from include.health.checks import HealthInputs, run_check
from include.health.config import load_health_config
from include.health.outcome import CheckFailed
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.registry import registry_client
from include.kafka_admin.catalog import topic_for
from include.kafka_admin.sandbox import provision_sandbox, sandbox_catalog
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

HOURS = (14102100, 14102101, 14102102, 14102103)
CLOSED, OPEN = HOURS[:2], HOURS[2:]
ORIGIN = Origin("test_ctr_reconciliation", "manual__test", "ingest_hour", 1)
SETTLE_S = 2.0


@dataclasses.dataclass
class Pipeline:
    store_url: str
    inputs: HealthInputs
    staging: str
    batch: dict[int, dict]  # what ctr_batch returned per staged hour
    records: int  # in the raw topic: produced by the ingestion + repaired by the DLQ reprocessing
    repaired: int

    def check(self):
        self.inputs.now = time.time()
        return run_check("ctr_reconciliation", self.inputs)

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.store_url) as connection:
            return connection.execute(sql, params).fetchall()


def _completed_checkpoints(rest: FlinkRestClient, job_id: str) -> int:
    return rest.metrics(job_id).completed_checkpoints


@pytest.fixture(scope="module")
def pipeline(flink_cluster, ctr_schema, postgres_url, kafka_config, schema_registry_url, tmp_path_factory):
    suffix = uuid.uuid4().hex[:10]
    folder = tmp_path_factory.mktemp("ctr-reconciliation")
    with ctr_schema(f"ctr_rec_{suffix}") as store:
        registry = registry_client(schema_registry_url)
        admin = AdminClient(kafka_config)
        topics = IngestTopics(f"ctr_rec_raw_{suffix}", f"ctr_rec_dlq_{suffix}", f"ctr_rec_ckpt_{suffix}")
        provision_ingest_topics(admin, registry, topics)
        copies = {role: f"ctr_rec_{role}_{suffix}" for role in ("dlq_retry_1", "dlq_retry_2", "dlq_retry_3", "dlq_parked")}
        provision_sandbox(admin, registry, copies)
        dlq_config = dataclasses.replace(load_dlq_config(), archive_uri=str(folder / "archive"), linger_s=0.0)
        spec = dlq_config.dlq(topic_for("dlq")).sandboxed(
            {"dlq": topics.dlq, "repaired": topics.raw, "parked": copies["dlq_parked"], "retry1": copies["dlq_retry_1"],
             "retry2": copies["dlq_retry_2"], "retry3": copies["dlq_retry_3"]}, group_id=f"ctr_rec_reprocess_{suffix}")
        generate(GeneratorSpec.with_every_fault(12_000, seed=2121, fault_rate=0.003, hours=len(HOURS)),
                 folder / "train.csv.gz")
        staging = str(folder / "staging")
        stage_source(str(folder / "train.csv.gz"), staging)
        ingest = load_ingest_config().with_topics(topics)
        records = repaired = 0
        for hour in HOURS:
            ingested = HourlyIngestor(find_partition(staging, hour), config=ingest, kafka_config=kafka_config,
                                      registry=registry, origin=ORIGIN).run()
            reprocessed = DlqReprocessor(spec, dlq_config, kafka_config=kafka_config, registry=registry).run()
            assert reprocessed.consumed == ingested.rows_dead_lettered and reprocessed.retried == 0
            records += ingested.rows_produced + reprocessed.repaired
            repaired += reprocessed.repaired

        rest = FlinkRestClient(flink_cluster.settings.rest_url)
        name = f"ctr-rec-{suffix}"
        job_id = submit(flink_cluster.settings,
                        ["--topic", topics.raw, "--schema", store.schema, "--group-id", f"ctr_rec_{suffix}",
                         "--checkpoint-interval", "2 s", "--parallelism", "2", "--idle-timeout", "10 min",
                         "--name", name], None, postgres_url)
        try:
            wait_for("the job to run", lambda: rest.metrics(job_id).state == "RUNNING", 120)
            wait_for(f"both sources to read {records} records", lambda: (
                len(sources := rest.metrics(job_id).sources) == 2 and all(s.records_in >= records for s in sources)),
                180, interval=0.5)
            wait_for(f"hour {CLOSED[-1]} in ctr_hourly", lambda: _stream_impressions(store.url, CLOSED[-1]) > 0, 120)
            # The sinks flush at every checkpoint: two more and what has fired is in PostgreSQL.
            done = _completed_checkpoints(rest, job_id)
            wait_for("two more checkpoints", lambda: _completed_checkpoints(rest, job_id) >= done + 2, 120, interval=0.5)
            batch = {hour: run_staged_hour(find_partition(staging, hour), store.url) for hour in HOURS}
            inputs = HealthInputs(config=load_health_config().replace(ctr_reconciliation={"settle_s": SETTLE_S}),
                                  kafka_config=kafka_config, registry=registry, ingest=ingest,
                                  catalog=sandbox_catalog(topics.as_dict()), store_url=store.url)
            yield Pipeline(store.url, inputs, staging, batch, records, repaired)
        finally:
            for job in rest.jobs():
                if job.name == name and job.state == "RUNNING":
                    rest.cancel(job.id)


def _stream_impressions(url: str, hour: int) -> int:
    with psycopg.connect(url) as connection:
        found = connection.execute("SELECT impressions FROM ctr_hourly WHERE dimension = 'all' AND hour = %s",
                                   (hour_timestamp(hour),)).fetchone()
    return found[0] if found else 0


def test_the_closed_hours_agree_exactly_repairs_included_and_the_open_ones_are_not_judged(pipeline):
    outcome = pipeline.check()
    assert outcome.ok, outcome.summary
    assert [(r["hour"], r["verdict"]) for r in outcome.rows] == [(h, "ok") for h in CLOSED] + [(h, "open") for h in OPEN]
    assert outcome.summary.startswith(f"{len(CLOSED)} closed hour(s) agree exactly: stream = batch in all ")
    assert f"{len(OPEN)} hour(s) the stream has not closed yet are not judged ({OPEN[0]}, {OPEN[1]}" in outcome.summary
    # The rows the DLQ reprocessing repaired are in both: the job read them from the raw topic, the batch
    # found them in the staged files by the DLQ's rules.
    assert pipeline.repaired > 0 and sum(pipeline.batch[h]["repaired_rows"] for h in HOURS) == pipeline.repaired
    for hour in CLOSED:
        result = pipeline.batch[hour]
        assert result["repaired_rows"] > 0
        assert _stream_impressions(pipeline.store_url, hour) == result["good_rows"] + result["repaired_rows"]
    assert pipeline.query("SELECT count(*) FROM ctr_late")[0][0] == 0
    metrics = {(m.name, tuple(m.labels.items())): m.value for m in outcome.metrics}
    assert metrics[("ctr_reconciliation_rows_differing", ())] == 0
    assert metrics[("ctr_reconciliation_hours", (("state", "judged"),))] == len(CLOSED)

    # A rerun of a staged hour replaces its rows with the same ones.
    before = pipeline.query("SELECT * FROM ctr_batch_hourly ORDER BY 1, 2, 3")
    run_staged_hour(find_partition(pipeline.staging, CLOSED[0]), pipeline.store_url)
    assert pipeline.query("SELECT * FROM ctr_batch_hourly ORDER BY 1, 2, 3") == before
    assert pipeline.check().ok


def test_a_changed_stream_row_fails_in_one_sentence_naming_hour_dimension_value_and_difference(pipeline):
    hour = CLOSED[0]
    (value, impressions, clicks), = pipeline.query(
        "SELECT value, impressions, clicks FROM ctr_hourly WHERE dimension = 'site_id' AND hour = %s "
        "ORDER BY impressions DESC, value LIMIT 1", hour_timestamp(hour))
    with psycopg.connect(pipeline.store_url) as connection:
        connection.execute("UPDATE ctr_hourly SET impressions = impressions + 1 WHERE dimension = 'site_id' "
                           "AND value = %s AND hour = %s", (value, hour_timestamp(hour)))
    began = time.monotonic()
    outcome = pipeline.check()
    assert time.monotonic() - began >= SETTLE_S  # read again before it is a finding
    assert not outcome.ok
    assert outcome.summary.startswith(
        f"1 of {len(CLOSED)} closed hour(s) differ between the stream (ctr_hourly) and the batch (ctr_batch_hourly): "
        f"hour {hour} site_id={value}: the stream counts 1 impression more and 0 clicks more than the batch "
        f"(impressions / clicks {impressions + 1:,} / {clicks:,} against {impressions:,} / {clicks:,})")
    assert "\n" not in outcome.summary
    assert [(r["hour"], r["verdict"], r["rows_differing"]) for r in outcome.rows[:2]] == [
        (CLOSED[0], "DIFFERS", 1), (CLOSED[1], "ok", 0)]
    with pytest.raises(CheckFailed, match=rf"^ctr_reconciliation: 1 of 2 closed hour\(s\) differ .* hour {hour} site_id="):
        outcome.raise_if_failed()
