"""The ctr_batch DAG: started by the ingestion's asset, and whole runs with dag.test() into a CTR store
of the test's own (a schema the postgres_default connection points at)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.ingest.staging import stage_source

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "ctr_batch.py"
HOURS = [14102100, 14102101]


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["ctr_batch"]


def _results(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, key="return_value")).all()
        results: dict = {}
        for row in sorted(rows, key=lambda r: r.map_index):
            value = XComModel.deserialize_value(row)
            if row.map_index >= 0:
                results.setdefault(row.task_id, []).append(value)
            else:
                results[row.task_id] = value
        return results


def test_runs_after_each_ingestion_run_one_mapped_task_per_hour():
    from kafka_pipeline.assets import CTR_BATCH_HOURS, INGESTED_HOURS

    dag = _load_dag()
    assert dag.timetable.asset_condition == INGESTED_HOURS
    assert dag.max_active_runs == 1
    assert dag.get_task("compute_hour").upstream_task_ids == {"staged_hours"}
    assert CTR_BATCH_HOURS in dag.get_task("compute_hour").outlets


@pytest.fixture
def staged(tmp_path):
    source = tmp_path / "train.csv.gz"
    generate(GeneratorSpec(4_000, hours=len(HOURS), seed=11, fault_rates={kind: 0.005 for kind in FaultKind}), source)
    stage_source(str(source), str(tmp_path / "staging"))
    return str(tmp_path / "staging")


def test_a_run_writes_each_hour_once_and_a_rerun_replaces_it(airflow_db, ctr_store, staged, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", ctr_store.url)
    dag = _load_dag()
    conf = {"hours": HOURS, "staging_uri": staged}
    first = dag.test(run_conf=conf)
    assert first.state == "success"
    computed = _results(first)["compute_hour"]
    assert [r["staged_hour"] for r in computed] == HOURS
    for result in computed:
        assert result["rows"] == result["good_rows"] + result["repaired_rows"] + result["parked_rows"]
        assert result["repaired_rows"] > 0 and result["parked_rows"] > 0
    with psycopg.connect(ctr_store.url) as connection:
        totals = connection.execute("SELECT hour, impressions FROM ctr_batch_hourly WHERE dimension = 'all' "
                                    "ORDER BY hour").fetchall()
        before = connection.execute("SELECT * FROM ctr_batch_hourly ORDER BY 1, 2, 3").fetchall()
    assert [n for _, n in totals] == [r["good_rows"] + r["repaired_rows"] for r in computed]

    again = dag.test(run_conf=conf)
    assert again.state == "success"
    with psycopg.connect(ctr_store.url) as connection:
        assert connection.execute("SELECT * FROM ctr_batch_hourly ORDER BY 1, 2, 3").fetchall() == before
        assert connection.execute("SELECT count(*) FROM ctr_batch_runs").fetchone()[0] == len(HOURS)


def test_an_hour_outside_the_data_set_fails_at_once_naming_it(airflow_db, ctr_store, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", ctr_store.url)
    run = _load_dag().test(run_conf={"hours": [14113000]})
    assert run.state == "failed"
    (hours,) = [ti for ti in run.get_task_instances() if ti.task_id == "staged_hours"]
    assert hours.state == "failed" and hours.try_number == 1  # permanent: no retry
