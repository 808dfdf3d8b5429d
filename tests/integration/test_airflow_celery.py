"""Airflow with the Celery executor and two workers, as `AIRFLOW_EXECUTOR=celery make airflow` runs it:
a backfill of several Avazu hours spreads over both workers and still ingests every row exactly once.

The services are started the way `make airflow` starts them (``python -m devstack.airflow``) on an
Airflow home and an API port of their own, with their metadata in a database of their own on the
local stack's PostgreSQL and their tasks on a queue of their own in its Redis, so they share nothing
with a `make airflow` on this machine; the DAGs write to sandbox topics (tests/local_airflow.py).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from include.ingest.checkpoint import CheckpointCodec, load_checkpoint_schema
from include.kafka.reader import read_topic
from include.kafka.registry import registry_client, schema_fetcher
from tests.exactly_once import assert_every_row_once
from tests.local_airflow import LocalAirflow, celery_wiring, ingest_sandbox

pytestmark = pytest.mark.integration

DAG_ID = "avazu_hourly_ingest"
FIRST_HOUR = datetime(2014, 10, 21, tzinfo=timezone.utc)
HOURS = 4


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, local_stack, kafka_config, schema_registry_url):
    from devstack import Stack

    home = tmp_path_factory.mktemp("airflow-celery")
    sandbox = ingest_sandbox(home / "sandbox", kafka_config, schema_registry_url, rows=12_000, hours=HOURS)
    wiring = celery_wiring(Stack(), workers=2, concurrency=2)
    local = LocalAirflow(home / "airflow", {**wiring.env, "AVAZU_CONFIG_DIR": str(sandbox.config_dir),
                                            "AIRFLOW_PARALLELISM": "8"})
    try:
        api = local.start()
        yield {"api": api, "local": local, "sandbox": sandbox}
    finally:
        try:
            local.stop()
            print(f"Airflow with two Celery workers: started in {local.started_in:.1f} s, "
                  f"stopped in {local.stopped_in:.1f} s")
        finally:
            wiring.drop()


def test_the_workers_run_and_answer_a_ping_over_the_broker(airflow):
    status = airflow["local"].status()
    port = airflow["local"].port
    assert "executor: CeleryExecutor, 2 workers" in status
    for n in (1, 2):
        line = next(line for line in status.splitlines() if line.strip().startswith(f"celery-worker-{n} "))
        assert "running" in line and "pid" in line, status
    assert f"worker1-{port}@" in status and f"worker2-{port}@" in status


@pytest.mark.timeout(900)
def test_a_backfill_spreads_over_both_workers_and_ingests_every_hour_exactly_once(airflow, kafka_config,
                                                                                   schema_registry_url):
    api, local, sandbox = airflow["api"], airflow["local"], airflow["sandbox"]
    api.wait_until_parsed(DAG_ID)
    api.unpause(DAG_ID)
    began = time.monotonic()
    runs = api.backfill(DAG_ID, FIRST_HOUR, HOURS, max_active_runs=4, check_alive=local.check_alive)
    took = time.monotonic() - began
    print(f"\nbackfill of {HOURS} hours through two Celery workers: {took:.1f} s")

    # Each hour once, complete, with every row of its partition read.
    results = [api.xcom(DAG_ID, r["dag_run_id"], "ingest_hour") for r in runs]
    assert [r["hour"] for r in results] == [14102100 + h for h in range(HOURS)]
    assert all(r["complete"] and r["hour_rows_read"] == r["partition_rows"] > 0 for r in results)
    assert sum(r["hour_rows_read"] for r in results) == sandbox.truth.rows

    # Both workers ran tasks: each task instance records the node name of the worker that ran it.
    backfilled = {r["dag_run_id"] for r in runs}
    hostnames = [t["hostname"] for t in api.task_instances(DAG_ID) if t["dag_run_id"] in backfilled]
    workers = {f"worker{n}-{local.port}@" for n in (1, 2)}
    per_worker = {w: sum(h.startswith(w) for h in hostnames) for w in workers}
    print(f"task instances per worker: {per_worker}")
    assert len(hostnames) == 4 * HOURS and all(any(h.startswith(w) for w in workers) for h in hostnames), hostnames
    assert all(per_worker.values()), f"a worker ran no task: {per_worker}"

    # In Kafka, read whole and read_committed: every source row once, good rows in raw, bad in the DLQ.
    registry = registry_client(schema_registry_url)
    topics = sandbox.topics
    assert_every_row_once(kafka_config, registry, topics["raw"], topics["dlq"], sandbox.good_ids, sandbox.truth)
    codec = CheckpointCodec(load_checkpoint_schema(), 0, schema_fetcher(registry))
    latest = {}
    for record in read_topic(kafka_config, topics["checkpoints"]):
        checkpoint = codec.decode(record.value)
        latest[checkpoint.hour] = checkpoint
    assert {h: c.complete for h, c in latest.items()} == {14102100 + h: True for h in range(HOURS)}
