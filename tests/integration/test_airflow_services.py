"""Airflow as users run it: the api-server, scheduler, dag-processor and triggerer, driven through the REST API.

The services are started the way `make airflow` starts them (``python -m devstack.airflow``), with an
Airflow home, an API port and copies of the settings files of their own (``AVAZU_CONFIG_DIR``) that
point every DAG at sandbox topics, so these runs never touch the topics of the local stack's other
users or of other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from include.health.checks import CHECKS
from include.kafka.reader import read_topic
from include.kafka.registry import registry_client, schema_fetcher
from include.kafka_admin.catalog import load_catalog
from include.kafka_admin.sandbox import provision_sandbox
from tests.browser import Browser
from tests.waiting import wait_for
from tests.local_airflow import Api, copy_config_with_topics, free_port as _free_port, leftover_processes

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def services(tmp_path_factory, kafka_config, schema_registry_url):
    home = tmp_path_factory.mktemp("airflow-services")
    suffix = uuid.uuid4().hex[:8]
    # Every declared topic under a name of its own ({role: name}): the sandbox's topics.yaml renames
    # them, and the other settings files and the DAGs follow, as they name topics by role.
    topics = {t.role: f"svc_{t.role}_{suffix}" for t in load_catalog().topics}
    provision_sandbox(AdminClient(kafka_config), registry_client(schema_registry_url), topics)
    # The stream pipelines' consumer groups get a suffix (AVAZU_STREAM_SUFFIX).
    stream_suffix = f"-svc-{suffix}"

    config_dir = home / "config"
    copy_config_with_topics(config_dir, topics)
    ingest = yaml.safe_load((config_dir / "ingest.yaml").read_text())
    ingest.update(source_uri=str(home / "data" / "train_sample.csv.gz"), staging_uri=str(home / "staging"),
                  generate_if_missing={"rows": 4_800, "seed": 5, "fault_rate": 0.002},
                  partition_wait={"timeout_s": 60, "poke_interval_s": 5})
    (config_dir / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    dlq = yaml.safe_load((config_dir / "dlq.yaml").read_text())
    dlq["archive_uri"] = str(home / "archive")
    for spec in dlq["dlqs"]:
        spec["group_id"] = f"svc-reprocess-{spec['topic']}-{suffix}"
    (config_dir / "dlq.yaml").write_text(yaml.safe_dump(dlq))
    health = yaml.safe_load((config_dir / "health.yaml").read_text())
    health.update(report_uri=str(home / "reports"), state_uri=str(home / "reports" / "state.json"))
    health["lag"]["groups"] = [f"svc-reprocess-*-{suffix}"]
    (config_dir / "health.yaml").write_text(yaml.safe_dump(health))

    port = _free_port()
    watch = {"bootstrap.servers": kafka_config["bootstrap.servers"], "group.id": f"svc-watch-{suffix}",
             "enable.auto.commit": "false", "auto.offset.reset": "earliest"}
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW_API_PORT": str(port), "AIRFLOW_PARALLELISM": "6", "AVAZU_CONFIG_DIR": str(config_dir),
           "AIRFLOW_CONN_KAFKA_DLQ_WATCH": json.dumps({"conn_type": "kafka", "extra": watch}),
           "AVAZU_STREAM_SUFFIX": stream_suffix, "AVAZU_STREAM_MAX_RUNTIME": "20",
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    began = time.monotonic()
    start = subprocess.run([sys.executable, "-m", "devstack.airflow", "start"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    started_in = time.monotonic() - began
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    api = Api(f"http://127.0.0.1:{port}", password)
    yield {"api": api, "topics": topics, "home": home, "started_in": started_in, "env": env}
    # Stopped while the always-on processors run (see the last test): they stop on SIGTERM and commit.
    began = time.monotonic()
    stop = subprocess.run([sys.executable, "-m", "devstack.airflow", "stop"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    stopped_in = time.monotonic() - began
    print(f"Airflow services: started in {started_in:.1f} s, stopped in {stopped_in:.1f} s")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    left = leftover_processes(home)
    assert not left, f"processes left behind: {left}"
    assert stopped_in < 60
    stopped = [line for log in (home / "logs").rglob("attempt=*.log") if "stream_processors" in str(log)
               for line in log.read_text().splitlines() if "stopped (" in line]
    assert any("stopped (SIGTERM)" in line or "stopped (task killed)" in line for line in stopped), stopped[-4:]


def test_every_dag_is_listed_without_import_errors(services):
    api = services["api"]
    listed = api.wait_for("the dag-processor to parse every DAG file",
                          lambda: (ids := sorted(d["dag_id"] for d in api.get("/dags", limit=100)["dags"])) == DAG_IDS
                          and ids, timeout=90)
    assert listed == DAG_IDS
    assert api.get("/importErrors")["total_entries"] == 0
    health = httpx.get(f"{api.url}/api/v2/monitor/health", timeout=10).json()
    assert all(health[k]["status"] == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def test_a_triggered_smoke_run_succeeds(services):
    api = services["api"]
    api.wait_for("kafka_smoke to be parsed", lambda: any(d["dag_id"] == "kafka_smoke" for d in api.get("/dags")["dags"]), 90)
    api.unpause("kafka_smoke")
    run = api.send("POST", "/dags/kafka_smoke/dagRuns",
                   {"logical_date": None, "conf": {"topic": f"svc_smoke_{uuid.uuid4().hex[:8]}", "records": 200}})
    api.wait_for_success("kafka_smoke", run["dag_run_id"])
    result = api.xcom("kafka_smoke", run["dag_run_id"], "avro_roundtrip")
    assert result["matched"] == result["produced"] == 200


def test_new_dead_letters_start_a_reprocessing_run_within_60_s(services, kafka_config):
    api, topics = services["api"], services["topics"]
    api.wait_for("dlq_reprocessing to be parsed",
                 lambda: any(d["dag_id"] == "dlq_reprocessing" for d in api.get("/dags")["dags"]), 90)
    api.unpause("dlq_reprocessing")
    before = {r["dag_run_id"] for r in api.runs("dlq_reprocessing")}
    producer = Producer(kafka_config)
    producer.produce(topics["analytics_dlq"], value=b'{"user_id": "u9"}', headers=[
        ("dlq.error.class", b"MissingField"), ("dlq.error.message", b"web event has no 'page'"),
        ("dlq.source.topic", b"web-events"), ("dlq.source.partition", b"0"), ("dlq.source.offset", b"7")])
    assert producer.flush(30) == 0
    produced = time.monotonic()
    run = api.wait_for("an asset-triggered dlq_reprocessing run", lambda: next(
        (r for r in api.runs("dlq_reprocessing") if r["dag_run_id"] not in before
         and r["run_type"] == "asset_triggered"), None), timeout=60)
    started_after = time.monotonic() - produced
    print(f"the dead letter started run {run['dag_run_id']} after {started_after:.1f} s")
    api.wait_for_success("dlq_reprocessing", run["dag_run_id"])
    parked = read_topic(kafka_config, topics["analytics_parked"])
    assert len(parked) == 1 and dict(parked[0].headers)["dlq.outcome"] == b"parked"


def test_unpaused_hourly_ingestion_runs_its_replay_hour_green(services):
    api = services["api"]
    api.wait_for("avazu_hourly_ingest and pipeline_health to be parsed",
                 lambda: {"avazu_hourly_ingest", "pipeline_health"} <= {d["dag_id"] for d in api.get("/dags")["dags"]}, 90)
    # pipeline_health runs after every ingestion run (the next test looks at the one this run starts).
    api.unpause("pipeline_health")
    api.unpause("avazu_hourly_ingest")
    run = api.wait_for("a scheduled avazu_hourly_ingest run",
                       lambda: next((r for r in api.runs("avazu_hourly_ingest") if r["run_type"] == "scheduled"), None),
                       timeout=90)
    api.wait_for_success("avazu_hourly_ingest", run["dag_run_id"], timeout=300)
    plan = api.xcom("avazu_hourly_ingest", run["dag_run_id"], "resolve_hour")
    result = api.xcom("avazu_hourly_ingest", run["dag_run_id"], "ingest_hour")
    assert plan["mode"] == "replay" and result["hour"] == plan["hour"]
    assert result["complete"] and result["rows_read"] == result["partition_rows"] > 0
    staged = api.xcom("avazu_hourly_ingest", run["dag_run_id"], "stage_source")
    assert staged["hours"] == 240  # the generated default source covers every Avazu hour


def test_an_ingestion_run_starts_a_pipeline_health_run_whose_report_is_written(services):
    api = services["api"]
    run = api.wait_for("an asset-triggered pipeline_health run",
                       lambda: next((r for r in api.runs("pipeline_health") if r["run_type"] == "asset_triggered"), None),
                       timeout=120)
    api.wait_for("the run to finish", lambda: api.get(f"/dags/pipeline_health/dagRuns/{run['dag_run_id']}")["state"]
                 in ("success", "failed"), timeout=300)
    report = api.xcom("pipeline_health", run["dag_run_id"], "report")
    assert {c["check"] for c in report["checks"]} == set(CHECKS) and report["missing"] == []
    assert Path(report["report"]["html"]).is_file()
    assert str(services["home"] / "reports") in report["report"]["html"]
    # The ingestion run that started it reached its throughput check through the asset event.
    ingest_run = next(r for r in api.runs("avazu_hourly_ingest") if r["run_type"] == "scheduled")
    hour = api.xcom("avazu_hourly_ingest", ingest_run["dag_run_id"], "ingest_hour")["hour"]
    assert f"| ingestion | hour {hour} (ingest) |" in Path(report["report"]["markdown"]).read_text()
    print("pipeline_health checks in the services run:", {c["check"]: c["status"] for c in report["checks"]})


def test_a_scheduler_backfill_ingests_two_avazu_hours(services, kafka_config):
    api, topics = services["api"], services["topics"]
    api.wait_for("avazu_hourly_ingest to be parsed",
                 lambda: any(d["dag_id"] == "avazu_hourly_ingest" for d in api.get("/dags")["dags"]), 90)
    # On SQLite the API may refuse it for a while with 503 "Database is locked": create_backfill asks again.
    api.create_backfill("avazu_hourly_ingest", datetime(2014, 10, 21, 0, tzinfo=timezone.utc),
                        datetime(2014, 10, 21, 1, tzinfo=timezone.utc), max_active_runs=2)
    runs = api.wait_for("two backfill runs", lambda: (found := [r for r in api.runs("avazu_hourly_ingest")
                                                                 if r["run_type"] == "backfill"]) and len(found) == 2
                        and found, timeout=90)
    results = []
    for run in runs:
        api.wait_for_success("avazu_hourly_ingest", run["dag_run_id"], timeout=300)
        results.append(api.xcom("avazu_hourly_ingest", run["dag_run_id"], "ingest_hour"))
    assert sorted(r["hour"] for r in results) == [14102100, 14102101]
    assert all(r["complete"] and r["hour_rows_read"] == r["partition_rows"] for r in results)
    # In Kafka: each hour's checkpoint says complete with the rows the run read.
    from include.ingest.checkpoint import CheckpointCodec, load_checkpoint_schema

    registry = registry_client(os.environ["SCHEMA_REGISTRY_URL"])
    codec = CheckpointCodec(load_checkpoint_schema(), 0, schema_fetcher(registry))
    latest = {}
    for record in read_topic(kafka_config, topics["checkpoints"]):
        checkpoint = codec.decode(record.value)
        latest[checkpoint.hour] = checkpoint
    for r in results:
        assert latest[r["hour"]].complete and latest[r["hour"]].rows_read == r["hour_rows_read"]


def test_a_person_logs_in_and_sees_every_dag_in_the_ui(services):
    api, home = services["api"], services["home"]
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    api.wait_for("every DAG to be parsed", lambda: len(api.get("/dags", limit=100)["dags"]) == len(DAG_IDS), 90)
    browser = Browser(home)
    try:
        browser.open(f"{api.url}/")
        browser.wait_until("the login form", "document.querySelectorAll('input').length >= 2")
        browser.screenshot(home / "login.png")
        browser.type_into("input[name=username], input:not([type=password])", "admin")
        browser.type_into("input[type=password]", password)
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_until("the UI after logging in", "!location.pathname.startsWith('/auth')")
        browser.open(f"{api.url}/dags")
        listed = browser.wait_until("every DAG of the project", "(() => { const t = document.body.innerText; return "
                                    + json.dumps(DAG_IDS) + ".every(d => t.includes(d)) && t; })()")
        shot = browser.screenshot(home / "dags.png")
        print(f"the DAG list as a person sees it: {shot}")
        assert all(dag_id in listed for dag_id in DAG_IDS)
        assert shot.read_bytes()[:4] == b"\x89PNG"
    finally:
        browser.close()


def test_the_always_on_processors_run_after_run_and_stop_cleanly(services, kafka_config):
    """@continuous: a run ends after max_runtime (20 s here) and the scheduler starts the next at once;
    the fixture's stop then ends the running one, which commits and closes (checked there)."""
    api, topics = services["api"], services["topics"]
    api.wait_for("stream_processors to be parsed",
                 lambda: any(d["dag_id"] == "stream_processors" for d in api.get("/dags")["dags"]), 90)
    producer = Producer(kafka_config)
    for word in ("hello", "airflow"):
        producer.produce(topics["words"], value=word.encode())
    assert producer.flush(30) == 0
    api.unpause("stream_processors")
    first = api.wait_for("a first run that ends", lambda: next(
        (r for r in api.runs("stream_processors") if r["state"] == "success"), None), timeout=150)
    counts = api.xcom("stream_processors", first["dag_run_id"], "uppercase_processor")
    assert counts["stop_reason"] == "max_runtime" and counts["records_in"] == 2
    api.wait_for("the next run to start", lambda: any(
        r["state"] == "running" and r["dag_run_id"] != first["dag_run_id"] for r in api.runs("stream_processors")), 60)
    out = sorted(r.value.decode() for r in read_topic(kafka_config, topics["uppercased_words"]))
    assert out == ["AIRFLOW", "HELLO"]
    # Let the second run's processors take their partitions before the services stop.
    api.wait_for("the second run's processors to run", lambda: [
        t for t in api.get("/dags/stream_processors/dagRuns/~/taskInstances", limit=100)["task_instances"]
        if t["state"] == "running"], 60)
