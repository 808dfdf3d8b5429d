"""kafka_smoke and kafka_provisioning run whole through dag.test() against the local stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
DAGS = Path(__file__).resolve().parents[2] / "dags"


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
    assert not bag.import_errors
    return bag.get_dag(dag_id)


def _results(run) -> dict:
    """Each task's return value in a finished dag.test() run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def test_smoke_dag_round_trips_every_record(airflow_db, local_stack, unique_name):
    topic = unique_name("smoke")
    run = _dag("kafka_smoke").test(run_conf={"topic": topic, "records": 300})
    assert run.state == "success"
    roundtrip = _results(run)["avro_roundtrip"]
    assert roundtrip["topic"] == topic
    assert [roundtrip[k] for k in ("produced", "delivered", "consumed", "matched")] == [300] * 4


def test_provisioning_dag_creates_then_reports_unchanged(airflow_db, local_stack, unique_name, tmp_path):
    schemas = Path(__file__).resolve().parents[2] / "schemas"
    topics = [unique_name("raw"), unique_name("dlq")]
    declarations = tmp_path / "topics.yaml"
    declarations.write_text(yaml.safe_dump({"topics": [
        {"name": topics[0], "role": "raw", "partitions": 3, "configs": {"retention.ms": 86400000},
         "value_schema": str(schemas / "ad_event.avsc")},
        {"name": topics[1], "role": "dlq", "partitions": 1, "configs": {"retention.ms": 604800000, "compression.type": "gzip"},
         "value_schema": str(schemas / "dlq_envelope.avsc")},
    ]}))
    dag = _dag("kafka_provisioning")

    first = dag.test(run_conf={"declarations": str(declarations)})
    assert first.state == "success"
    results = _results(first)
    assert {r["topic"]: r["action"] for r in results["provision_topics"]} == {t: "created" for t in topics}
    assert {r["subject"]: (r["action"], r["version"]) for r in results["register_schemas"]} == {
        f"{t}-value": ("registered", 1) for t in topics}
    # The local stack has no authorizer (KAFKA_AUTH=none): the ACL task says so and grants nothing.
    assert [r["action"] for r in results["provision_acls"]] == ["skipped: the cluster has no authorizer (KAFKA_AUTH=none)"]
    assert results["verify"] == {"topics": 2, "subjects": 2, "acls": 0, "partitions": 4}

    second = dag.test(run_conf={"declarations": str(declarations)})
    assert second.state == "success"
    again = _results(second)
    assert {r["action"] for r in again["provision_topics"]} == {"unchanged"}
    assert {r["action"] for r in again["register_schemas"]} == {"unchanged"}


def test_provisioning_dag_fails_on_a_bad_declaration_before_touching_kafka(airflow_db, local_stack, tmp_path):
    declarations = tmp_path / "topics.yaml"
    declarations.write_text(json.dumps({"topics": [{"name": "x", "role": "x", "partitions": 0}]}))
    run = _dag("kafka_provisioning").test(run_conf={"declarations": str(declarations)})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate_declarations"] == "failed"
    assert states["provision_topics"] != "success"
