"""ctr_stream through dag.test(): a run submits the Flink CTR job and hands it on running, the next takes
it over and (told to) stops it with a savepoint, and the one after resumes from that savepoint. On a
Flink cluster, topic and schema of the test's own (tests/ctr_flink.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client import delete_from_gateway

from include.ctr.metrics import JOB
from tests.ctr_flink import HOURS, ctr_pipeline
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "ctr_stream.py"


def _return_values(dag_id: str, run_id: str) -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def test_runs_hand_the_job_on_take_it_over_stop_it_with_a_savepoint_and_resume_it(
        airflow_db, flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path, monkeypatch, request):
    from airflow.dag_processing.dagbag import DagBag

    settings = flink_cluster.settings
    monkeypatch.setenv("DEVSTACK_HOME", str(settings.stack.home))
    monkeypatch.setenv("FLINK_REST_PORT", str(settings.rest_port))
    monkeypatch.setenv("FLINK_RPC_PORT", str(settings.rpc_port))
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", postgres_url)
    dag = DagBag(dag_folder=str(DAG_FILE)).get_dag("ctr_stream")
    with ctr_pipeline("ctr_dag", flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path) as ctr:
        # The shared Pushgateway keeps no group of this test's job.
        request.addfinalizer(lambda: delete_from_gateway(os.environ["PUSHGATEWAY_URL"], job=JOB,
                                                         grouping_key={"flink_job": ctr.job_name}))
        for hour in HOURS[:3]:  # hour 2 closes hour 0
            ctr.ingest(hour)
        conf = {"job_name": ctr.job_name, "topic": ctr.topics.raw, "schema": ctr.schema,
                "group_id": ctr.job_args[ctr.job_args.index("--group-id") + 1],
                "max_runtime": 10, "stop_at_end": False, "progress_interval": 5}

        # A run submits the job and, at its max_runtime, hands it on running.
        first = dag.test(run_conf=conf)
        handed_on = _return_values("ctr_stream", first.run_id).get("ctr_job")
        assert first.state == "success", handed_on
        assert handed_on["stop_reason"] == "max_runtime" and handed_on["savepoint"] is None
        assert not handed_on["adopted"] and handed_on["resumed_from"] is None
        job_id = handed_on["job_id"]
        ctr.job_id = job_id
        assert ctr.rest.job(job_id).state == "RUNNING"
        ctr.caught_up()
        wait_for("hour 0 in ctr_hourly", lambda: len(ctr.frame("SELECT 1 FROM ctr_hourly")) > 0, 120)
        ctr.settled()
        ctr.assert_exact_hours(HOURS[:1])  # hour 2 closed hour 0

        # The next run takes the same job over, and told to, stops it with a savepoint at its end.
        second = dag.test(run_conf={**conf, "stop_at_end": True})
        stopped = _return_values("ctr_stream", second.run_id).get("ctr_job")
        assert second.state == "success", stopped
        assert stopped["adopted"] and stopped["job_id"] == job_id
        assert stopped["stop_reason"] == "max_runtime" and stopped["savepoint"]
        assert stopped["records_in"] == {"events_by_hour": ctr.ingested, "events_by_arrival": ctr.ingested}
        assert ctr.rest.job(job_id).state == "FINISHED"
        restore_file = settings.home / "restore-points" / f"{ctr.job_name}.json"
        assert json.loads(restore_file.read_text())["restore_point"]["path"] == stopped["savepoint"]

        # The run after that resumes from the savepoint: a new job, nothing read twice.
        third = dag.test(run_conf={**conf, "stop_at_end": True})
        resumed = _return_values("ctr_stream", third.run_id).get("ctr_job")
        assert third.state == "success", resumed
        assert resumed["resumed_from"] == stopped["savepoint"] and resumed["job_id"] != job_id
        assert resumed["savepoint"] and not resumed["adopted"]
        assert resumed["records_in"] in ({}, {"events_by_hour": 0, "events_by_arrival": 0})
        ctr.assert_exact_hours(HOURS[:1])
