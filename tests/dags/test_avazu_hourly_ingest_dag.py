"""avazu_hourly_ingest end to end with dag.test(): backfill hours, a replayed hour, a missing partition."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
from confluent_kafka.admin import AdminClient

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.ingest.hours import replay_hour
from include.ingest.staging import find_partition
from include.ingest.config import IngestTopics
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_topic
from include.kafka.registry import registry_client

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "avazu_hourly_ingest.py"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["avazu_hourly_ingest"]


def _results(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def _replay_date_for(hour: int) -> pendulum.DateTime:
    """A 2026 hour that replay mode (offset 0, wrap) maps onto ``hour``."""
    moment = pendulum.datetime(2026, 3, 1, tz="UTC")
    while replay_hour(moment, 0) != hour:
        moment += timedelta(hours=1)
    return moment


def test_the_dag_is_wired_as_documented():
    dag = _dag()
    assert [t.task_id for t in dag.topological_sort()] == ["resolve_hour", "stage_source", "wait_for_partition", "ingest_hour"]
    assert dag.catchup is False and dag.start_date == pendulum.datetime(2014, 10, 21, tz="UTC")
    assert dag.task_dict["wait_for_partition"].mode == "reschedule"


@pytest.mark.integration
def test_backfill_and_replay_runs_ingest_their_hours_once(airflow_db, local_stack, kafka_config, schema_registry_url,
                                                          unique_name, tmp_path):
    source = tmp_path / "train.csv.gz"
    truth = generate(GeneratorSpec(5_000, hours=2, seed=31, fault_rates={kind: 0.002 for kind in FaultKind}), source)
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry_client(schema_registry_url), topics)
    conf = {"source_uri": str(source), "staging_uri": str(tmp_path / "staging"), "chunk_rows": 1_000,
            "raw_topic": topics.raw, "dlq_topic": topics.dlq, "checkpoint_topic": topics.checkpoints}
    dag = _dag()

    counts = {}
    for hour, logical_date in ((14102100, pendulum.datetime(2014, 10, 21, 0, tz="UTC")),
                               (14102101, pendulum.datetime(2014, 10, 21, 1, 30, tz="UTC"))):
        run = dag.test(logical_date=logical_date, run_conf=conf)
        assert run.state == "success"
        results = _results(run)
        assert (results["resolve_hour"]["hour"], results["resolve_hour"]["mode"]) == (hour, "backfill")
        ingest = results["ingest_hour"]
        partition = find_partition(conf["staging_uri"], hour)
        assert ingest["action"] == "ingest" and ingest["complete"]
        assert ingest["rows_read"] == partition.rows == ingest["rows_produced"] + ingest["rows_dead_lettered"]
        assert ingest["rows_dead_lettered"] == partition.bad_rows
        counts[hour] = ingest
        stage = results["stage_source"]
        assert stage["action"] == ("staged" if hour == 14102100 else "unchanged")

    assert sum(c["rows_read"] for c in counts.values()) == truth.rows
    assert sum(c["rows_dead_lettered"] for c in counts.values()) == len(truth.bad_lines())
    assert len(read_topic(kafka_config, topics.raw)) == truth.rows - len(truth.bad_lines())

    # A 2026 run replays an Avazu hour; this one was ingested above, so it adds nothing.
    replay = dag.test(logical_date=_replay_date_for(14102101), run_conf=conf)
    assert replay.state == "success"
    results = _results(replay)
    assert (results["resolve_hour"]["hour"], results["resolve_hour"]["mode"]) == (14102101, "replay")
    assert results["ingest_hour"]["action"] == "already-complete" and results["ingest_hour"]["rows_read"] == 0
    assert len(read_topic(kafka_config, topics.raw)) == truth.rows - len(truth.bad_lines())


@pytest.mark.integration
def test_a_missing_partition_fails_the_run_before_ingesting(airflow_db, local_stack, tmp_path):
    source = tmp_path / "train.csv.gz"
    generate(GeneratorSpec(500, hours=1, seed=3), source)
    run = _dag().test(logical_date=pendulum.datetime(2014, 10, 21, 5, tz="UTC"),
                      run_conf={"source_uri": str(source), "staging_uri": str(tmp_path / "staging"), "partition_wait_s": 1})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["stage_source"] == "success" and states["wait_for_partition"] == "failed"
    assert states["ingest_hour"] != "success"


def test_the_timeout_message_names_the_hour_and_where_it_looked(tmp_path):
    from airflow.sdk.exceptions import AirflowSensorTimeout
    from kafka_pipeline.operators.ingest import AvazuHourPartitionSensor

    from include.ingest.staging import stage_source

    source = tmp_path / "train.csv.gz"
    generate(GeneratorSpec(300, hours=2, seed=4), source)
    stage_source(str(source), str(tmp_path / "staging"))
    sensor = AvazuHourPartitionSensor(task_id="wait", staging_uri=str(tmp_path / "staging"), hour=14102105,
                                      wait_timeout_s=0, poke_interval_s=1, mode="poke")
    with pytest.raises(AirflowSensorTimeout) as timeout:
        sensor.execute({})
    message = str(timeout.value)
    assert f"no partition for Avazu hour 14102105 after 0 s: looked for {tmp_path}/staging/hour=14102105/_partition.json" in message
    assert "covers 2 hour(s), 14102100..14102101" in message
