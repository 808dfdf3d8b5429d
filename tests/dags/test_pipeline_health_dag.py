"""pipeline_health with dag.test(): wired as documented, started by the ingest DAG's asset, a green
run after an ingestion run it times, and a red one whose failing check does not stop the report.

The settings files are sandboxed (AVAZU_CONFIG_DIR): topics.yaml gives the ingestion's roles topics
of the test's own, health.yaml puts the report and the lag window in a temporary folder; the
postgres_default connection points at a CTR store of the test's own.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.ingest.config import IngestTopics
from include.ingest.topics import provision_ingest_topics
from include.kafka.registry import registry_client
from include.paths import CONFIG_DIR

DAGS = Path(__file__).resolve().parents[2] / "dags"


def _dags():
    from airflow.dag_processing.dagbag import DagBag

    found = []
    for dag_id in ("pipeline_health", "avazu_hourly_ingest"):
        bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
        assert bag.import_errors == {}
        found.append(bag.dags[dag_id])
    return tuple(found)


def _results(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def test_the_dag_is_wired_as_documented():
    from kafka_pipeline.assets import INGESTED_HOURS

    health, ingest = _dags()
    checks = ["consumer_lag", "dlq_ratio", "reconciliation", "ctr_reconciliation", "throughput", "topic_drift",
              "registry_drift", "brokers"]
    assert sorted(health.task_ids) == sorted([*checks, "report", "healthy"])
    for check in checks:
        assert {"report", "healthy"} <= health.get_task(check).downstream_task_ids
    assert health.get_task("report").trigger_rule == "all_done"
    assert health.get_task("healthy").trigger_rule == "all_success"
    assert health.get_task("throughput").upstream_task_ids == {"consumer_lag"}
    assert INGESTED_HOURS in ingest.get_task("ingest_hour").outlets
    assert INGESTED_HOURS in health.get_task("throughput").inlets
    assert health.max_active_runs == 1


@pytest.fixture
def sandbox(tmp_path, monkeypatch, kafka_config, schema_registry_url, unique_name, ctr_store):
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry_client(schema_registry_url), topics)
    folder = tmp_path / "config"
    folder.mkdir()
    ingest = yaml.safe_load((CONFIG_DIR / "ingest.yaml").read_text())
    ingest["staging_uri"] = str(tmp_path / "staging")
    (folder / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    declared = yaml.safe_load((CONFIG_DIR / "topics.yaml").read_text())
    # The ingestion's roles renamed to this test's topics: ingest.yaml follows, as it names no topic.
    names = topics.as_dict()
    declared["topics"] = [{**t, "name": names[t["role"]]} for t in declared["topics"] if t["role"] in names]
    (folder / "topics.yaml").write_text(yaml.safe_dump(declared))
    health = yaml.safe_load((CONFIG_DIR / "health.yaml").read_text())
    health.update(report_uri=str(tmp_path / "reports"), state_uri=str(tmp_path / "state.json"))
    health["lag"]["groups"] = [unique_name("group") + "-*"]
    health["throughput"].update(ingest_min_rows=100, ingest_min_rows_per_s=1)
    health["dlq"].update(min_rows=100, max_ratio=0.05)
    (folder / "health.yaml").write_text(yaml.safe_dump(health))
    monkeypatch.setenv("AVAZU_CONFIG_DIR", str(folder))
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", ctr_store.url)
    source = tmp_path / "train.csv.gz"
    generate(GeneratorSpec(3_000, hours=1, seed=5, fault_rates={kind: 0.001 for kind in FaultKind}), source)
    return {"topics": topics, "folder": folder, "source": str(source), "tmp": tmp_path}


def test_an_ingestion_run_then_a_green_run_then_a_red_one_that_still_reports(airflow_db, local_stack, sandbox):
    health, ingest = _dags()
    ingested = ingest.test(logical_date=pendulum.datetime(2014, 10, 21, 0, tz="UTC"),
                           run_conf={"source_uri": sandbox["source"], "chunk_rows": 1_000})
    assert ingested.state == "success"
    rows_read = _results(ingested)["ingest_hour"]["rows_read"]

    green = health.test()
    assert green.state == "success"
    results = _results(green)
    report = results["report"]
    assert report["failed"] == [] and report["missing"] == [] and len(report["checks"]) == 8
    assert results["healthy"] == "all 8 checks passed"
    ctr = next(c for c in report["checks"] if c["check"] == "ctr_reconciliation")
    assert ctr["summary"].startswith("no hour was batched in the last 24 h")
    assert Path(report["report"]["html"]).is_file() and Path(report["report"]["latest_html"]).is_file()
    # The ingestion run reached the throughput check through the asset event's extra.
    throughput = next(c for c in report["checks"] if c["check"] == "throughput")
    assert "1 run(s) and processor(s) timed" in throughput["summary"]
    assert f"{rows_read:,}" in Path(report["report"]["markdown"]).read_text()

    # The same pipeline judged by a DLQ limit its hour is over: that check fails, once, and the
    # report still runs and names it.
    path = sandbox["folder"] / "health.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["dlq"]["max_ratio"] = 0.0
    path.write_text(yaml.safe_dump(settings))
    red = health.test()
    assert red.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in red.get_task_instances()}
    assert states["dlq_ratio"][0] == "failed" and states["dlq_ratio"][1] == 1  # a finding is not retried
    assert states["report"][0] == "success" and states["healthy"][0] == "upstream_failed"
    assert all(states[c][0] == "success" for c in ("consumer_lag", "reconciliation", "topic_drift", "brokers"))
    report = _results(red)["report"]
    assert report["failed"] == ["dlq_ratio"]
    assert "dlq_ratio: FAIL" in Path(report["report"]["html"]).read_text()
