"""dlq_reprocessing: repair, retry or park every declared DLQ's dead letters, exactly once.

declared_dlqs -> reprocess[one mapped task per DLQ of include/config/dlq.yaml]

* Scheduled both every 30 minutes and whenever records arrive on a DLQ topic: the
  ``dead_letters`` asset's watcher (a shared Kafka consumer in the triggerer, connection
  ``kafka_dlq_watch``) turns arrivals into asset events. Events only wake the DAG up; what a run
  reads is decided by the reprocessor's own consumer group, so a missed or doubled event changes
  nothing. ``max_active_runs=1``: one reprocessor per DLQ at a time.
* Each DLQ of include/config/dlq.yaml is one mapped task: dead letters are classified by reason,
  repaired back into the raw topic (re-validated by the row contract), retried with backoff through
  the retry topics, or parked (the DLQ's parked topic) and archived as Avro files
  (``archive_uri``); dlq.yaml names these topics by their roles in include/config/topics.yaml.
  Outcomes and consumed offsets commit in one transaction; every run checks consumed = repaired +
  retried + parked and logs its table by reason and outcome.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, dag, task
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.operators.dlq import ReprocessDlqOperator
from kafka_pipeline.triggers import DLQ_WATCH_CONN_ID, DeadLettersArrived

# Empty: the trigger watches every DLQ of include/config/dlq.yaml, looked up in the triggerer (a DAG
# file reads no files when it is parsed). A deployment on other topics names them in AVAZU_DLQ_TOPICS.
DLQ_TOPICS = [topic for topic in os.environ.get("AVAZU_DLQ_TOPICS", "").split(",") if topic]
DEAD_LETTERS = Asset(
    name="dead_letters",
    uri="kafka://dlq-topics/declared",
    watchers=[AssetWatcher(name="dead_letters_arrived",
                           trigger=DeadLettersArrived(topics=DLQ_TOPICS, kafka_config_id=DLQ_WATCH_CONN_ID))],
)


@dag(
    dag_id="dlq_reprocessing",
    description="Repair, retry with backoff, or park and archive the dead letters of every DLQ, exactly once",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/30 * * * *", timezone="UTC"),
                                 assets=DEAD_LETTERS),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={"owner": "data-engineering", "retries": 3, "retry_delay": pendulum.duration(seconds=30),
                  "retry_exponential_backoff": True, "max_retry_delay": pendulum.duration(minutes=10)},
    tags=["kafka", "dlq", "reprocessing"],
    params={
        "dlqs": Param([], type="array", items={"type": "string"},
                      description="DLQs to reprocess (names in include/config/dlq.yaml); empty: all of them."),
        "archive_uri": Param("", type="string",
                             description="Folder or s3:// prefix for the archive of parked records; empty: the config's."),
        "topics": Param({}, type="object",
                        description="Per DLQ, other topics for its roles (dlq, repaired, parked, retry1..3) and group: "
                                    "a DLQ on copies of its topics. Empty: the declared ones."),
    },
    doc_md=__doc__,
)
def dlq_reprocessing():
    @task
    @fails_cleanly
    def declared_dlqs(params=None) -> list[str]:
        """The DLQs this run reprocesses, checked against include/config/dlq.yaml."""
        from include.dlq.config import load_dlq_config

        config = load_dlq_config()
        return [config.dlq(name).name for name in params["dlqs"]] or config.names()

    ReprocessDlqOperator.partial(task_id="reprocess", archive_uri="{{ params.archive_uri }}",
                                 topics="{{ params.topics }}").expand(
        dlq=declared_dlqs())


dlq_reprocessing()
