"""The dlq_reprocessing DAG: its schedule (cron or dead letters arriving), and a whole run with dag.test()."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.dlq.config import load_dlq_config
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_topic
from include.kafka_admin.catalog import topic_for
from include.kafka_admin.sandbox import provision_sandbox
from include.kafka.registry import registry_client

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "dlq_reprocessing.py"


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["dlq_reprocessing"]


def test_runs_every_30_minutes_and_when_dead_letters_arrive_on_every_declared_dlq():
    import dlq_reprocessing  # the DAG module (the DAG folder is on sys.path, as in Airflow)
    from kafka_pipeline.triggers import DeadLettersArrived

    dag = _load_dag()
    assert dag.max_active_runs == 1
    assert dag.timetable.timetable.expression == "*/30 * * * *"
    assert dag.timetable.asset_condition.name == "dead_letters"
    [watcher] = dlq_reprocessing.DEAD_LETTERS.watchers
    assert isinstance(watcher.trigger, DeadLettersArrived)
    # The DAG file names no topic: the trigger looks the declared DLQs up where it runs.
    assert watcher.trigger.topics == []
    assert watcher.trigger.watched(watcher.trigger.topics) == sorted(spec.topic for spec in load_dlq_config().dlqs)
    assert watcher.trigger.shared_stream_key()[1] == tuple(sorted(spec.topic for spec in load_dlq_config().dlqs))
    assert watcher.trigger.kafka_config_id == "kafka_dlq_watch"
    path, kwargs = watcher.trigger.serialize()
    assert path == "kafka_pipeline.triggers.DeadLettersArrived" and kwargs["topics"] == watcher.trigger.topics


def test_the_watch_connection_commits_only_what_the_triggerer_stored():
    import json
    import os

    extra = json.loads(os.environ["AIRFLOW_CONN_KAFKA_DLQ_WATCH"])["extra"]
    assert str(extra["enable.auto.commit"]).lower() == "false" and extra["group.id"]


def test_a_run_reprocesses_the_dlq_and_a_second_finds_nothing_new(airflow_db, kafka_config, schema_registry_url,
                                                                  unique_name, tmp_path):
    source = tmp_path / "train.csv"
    truth = generate(GeneratorSpec(3_000, hours=1, seed=77, fault_rates={kind: 0.004 for kind in FaultKind}), source)
    stage_source(str(source), str(tmp_path / "staging"))
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    copies = {"dlq_retry_1": unique_name("r1"), "dlq_retry_2": unique_name("r2"),
              "dlq_retry_3": unique_name("r3"), "dlq_parked": unique_name("parked")}
    provision_sandbox(AdminClient(kafka_config), registry, copies)
    config = load_ingest_config().with_topics(topics)
    HourlyIngestor(find_partition(str(tmp_path / "staging"), 14102100), config=config, kafka_config=kafka_config,
                   registry=registry).run()
    dlq = topic_for("dlq")  # the DLQ's name in dlq.yaml
    conf = {"dlqs": [dlq], "archive_uri": str(tmp_path / "archive"),
            "topics": {dlq: {"dlq": topics.dlq, "repaired": topics.raw, "parked": copies["dlq_parked"],
                             "retry1": copies["dlq_retry_1"], "retry2": copies["dlq_retry_2"],
                             "retry3": copies["dlq_retry_3"], "group": unique_name("group")}}}
    dag = _load_dag()
    first = dag.test(run_conf=conf)
    assert str(first.state) == "success"
    [result] = first.get_task_instance("reprocess", map_index=0).xcom_pull(task_ids="reprocess", map_indexes=0),
    bad = truth.bad_lines()
    assert (result["consumed"], result["repaired"], result["parked"]) == (len(bad), len(truth.repairs),
                                                                          len(bad) - len(truth.repairs))
    assert len(read_topic(kafka_config, copies["dlq_parked"])) == result["parked"]
    second = dag.test(run_conf=conf)
    assert str(second.state) == "success"
    again = second.get_task_instance("reprocess", map_index=0).xcom_pull(task_ids="reprocess", map_indexes=0)
    assert again["consumed"] == 0


def test_the_trigger_fires_once_per_dead_letter_without_decoding_it():
    import asyncio

    from kafka_pipeline.triggers import DeadLettersArrived

    async def arrivals():
        for value in (b"\x00\x00\x00\x00\x07avro", b"\xff\xfe not utf-8", None):
            yield value

    async def events():
        trigger = DeadLettersArrived(topics=["dlq_b", "dlq_a"], kafka_config_id="kafka_dlq_watch")
        return [event.payload async for event in trigger.filter_shared_stream(arrivals())]

    payloads = asyncio.run(events())
    assert [p["value_bytes"] for p in payloads] == [9, 12, 0]
    assert all(p["topics"] == ["dlq_a", "dlq_b"] for p in payloads)
