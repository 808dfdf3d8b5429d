"""stream_pipelines_e2e through dag.test(): both seed pipelines end to end on topics of their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer

from include.kafka.reader import READER_SETTINGS, read_to_end
from include.streaming.simulators import purchase_events, web_events

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "stream_pipelines_e2e.py"


def _return_values(dag_id: str, run_id: str) -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id,
                                                  key="return_value")).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def test_stream_pipelines_e2e_delivers_every_event_once(airflow_db, kafka_config, unique_name):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).get_dag("stream_pipelines_e2e")
    prefix = unique_name("e2e")
    conf = {
        "web_events_topic": f"{prefix}_web", "purchase_events_topic": f"{prefix}_purchase",
        "analytics_events_topic": f"{prefix}_analytics", "analytics_dlq_topic": f"{prefix}_dlq",
        "input_topic": f"{prefix}_input", "output_topic": f"{prefix}_output",
        "group_prefix": prefix, "web_events": 120, "purchase_events": 80, "bad_ratio": 0.2,
        "seed": 11, "idle_timeout": 3, "max_runtime": 60,
        "words": ["hello", "world", "kafka", "streaming", "data", "airflow", "avro"],
    }
    run = dag.test(run_conf=conf)
    values = _return_values("stream_pipelines_e2e", run.run_id)
    assert run.state == "success", values

    bad = sum(1 for e in web_events(120, seed=11, bad_ratio=0.2) if e.fault) + \
        sum(1 for e in purchase_events(80, seed=11, bad_ratio=0.2) if e.fault)
    assert bad > 0
    assert sorted(values["create_topics"]) == sorted(
        conf[k] for k in conf if k.endswith("_topic"))
    processed = values["analytics_processor"]
    assert (processed["records_in"], processed["records_out"], processed["dead_lettered"]) == \
        (200, 200 - bad, bad)
    assert processed["stop_reason"] == "idle_timeout"
    report = values["report_analytics"]
    assert report["records"] == 200 - bad and report["duplicates"] == 0
    assert sum(report["by_source"].values()) == 200 - bad
    assert values["uppercase_processor"]["records_out"] == 7
    assert values["report_words"]["check"] == {"words_sent": 7, "words_seen": 7}

    # The DLQ holds exactly the bad events, read back independently of the DAG.
    consumer = Consumer({**kafka_config, **READER_SETTINGS, "group.id": unique_name("dlq")})
    try:
        dead = list(read_to_end(consumer, [conf["analytics_dlq_topic"]], from_committed=True, timeout=30))
    finally:
        consumer.close()
    assert len(dead) == bad


@pytest.mark.parametrize("dag_id", ["stream_processors", "stream_simulators", "stream_pipelines_e2e"])
def test_an_empty_topic_param_is_the_declared_topic_of_its_role_looked_up_when_the_task_runs(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    from _stream_pipelines import STREAM_TOPICS, stream_topic
    from include.kafka_admin.catalog import topic_for

    dag = DagBag(dag_folder=str(DAG_FILE.parent / f"{dag_id}.py")).dags[dag_id]
    params = {name: param.value for name, param in dag.params.items()}
    topics = [name for name in params if name in STREAM_TOPICS]
    assert topics and all(params[name] == "" for name in topics)  # the DAG file names no topic
    assert all(stream_topic(params, name) == topic_for(STREAM_TOPICS[name][0]) for name in topics)
    assert stream_topic({**params, topics[0]: "mine"}, topics[0]) == "mine"
    env = dag.get_template_env()
    for task in dag.tasks:
        for field in ("input_topics", "output_topic", "dlq_topic"):
            for template in (lambda v: v if isinstance(v, list) else [v])(getattr(task, field, None)):
                if template:
                    rendered = env.from_string(template).render(params=params)
                    assert rendered in {topic_for(role) for role, _ in STREAM_TOPICS.values()}, (task.task_id, field)
