"""ctr_stream through dag.test(): a run submits the Flink CTR job and, told to stop at its end, stops it
with a savepoint; the next run resumes from that savepoint. On a Flink cluster, topic and schema of
the test's own (tests/ctr_flink.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ctr_flink import HOURS, ctr_pipeline

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "ctr_stream.py"


def _return_values(dag_id: str, run_id: str) -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def test_a_run_stops_the_job_with_a_savepoint_and_the_next_resumes_from_it(
        airflow_db, flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    settings = flink_cluster.settings
    monkeypatch.setenv("DEVSTACK_HOME", str(settings.stack.home))
    monkeypatch.setenv("FLINK_REST_PORT", str(settings.rest_port))
    monkeypatch.setenv("FLINK_RPC_PORT", str(settings.rpc_port))
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", postgres_url)
    dag = DagBag(dag_folder=str(DAG_FILE)).get_dag("ctr_stream")
    with ctr_pipeline("ctr_dag", flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path) as ctr:
        for hour in HOURS[:3]:  # hour 2 closes hour 0
            ctr.ingest(hour)
        conf = {"job_name": ctr.job_name, "topic": ctr.topics.raw, "schema": ctr.schema,
                "group_id": ctr.job_args[ctr.job_args.index("--group-id") + 1],
                "max_runtime": 30, "stop_at_end": True, "progress_interval": 5}

        first = dag.test(run_conf=conf)
        stopped = _return_values("ctr_stream", first.run_id).get("ctr_job")
        assert first.state == "success", stopped
        assert stopped["stop_reason"] == "max_runtime" and stopped["savepoint"] and stopped["resumed_from"] is None
        assert stopped["records_in"] == {"events_by_hour": ctr.ingested, "events_by_arrival": ctr.ingested}
        assert stopped["progress_lines"] >= 2 and stopped["rows_written"] > 0
        # The stop flushed the sinks: hour 0, closed by hour 2, is in the table and exact.
        ctr.assert_exact_hours(HOURS[:1])
        restore_file = settings.home / "restore-points" / f"{ctr.job_name}.json"
        assert json.loads(restore_file.read_text())["restore_point"]["path"] == stopped["savepoint"]

        second = dag.test(run_conf={**conf, "max_runtime": 10})
        resumed = _return_values("ctr_stream", second.run_id).get("ctr_job")
        assert second.state == "success", resumed
        assert resumed["resumed_from"] == stopped["savepoint"] and resumed["job_id"] != stopped["job_id"]
        assert resumed["savepoint"] and resumed["stop_reason"] == "max_runtime"
        # Nothing new to read after the savepoint: the resumed job read no record twice.
        assert resumed["records_in"] in ({}, {"events_by_hour": 0, "events_by_arrival": 0})
        ctr.assert_exact_hours(HOURS[:1])
