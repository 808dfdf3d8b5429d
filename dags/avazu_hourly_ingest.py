"""avazu_hourly_ingest: each hourly run ingests one Avazu hour into Kafka, exactly once.

resolve_hour -> stage_source -> wait_for_partition -> ingest_hour

* resolve_hour reads include/config/ingest.yaml (once, checked), applies the run's params and
  maps the hour of the run's logical date onto an Avazu hour: *backfill* when it is the 2014 hour
  itself, *replay* when it is today's hour (moved back by ``replay.offset_hours`` and wrapped into
  the ten days); *auto* (the default) picks by date, and takes every run of an Airflow backfill
  as a backfill.
* stage_source splits the source into hour partitions once; later runs find it staged (a no-op).
* wait_for_partition waits (reschedule mode, bounded) for the hour and, on timeout, fails naming
  the hour and the path it looked at.
* ingest_hour writes the hour's rows to the raw topic and its bad rows to the DLQ topic in
  chunks, one transaction per chunk with the hour's checkpoint; a retry resumes after the last
  committed chunk and a finished hour writes nothing again unless ``reingest`` is set. Each
  successful run updates the ``avazu_ingested_hours`` asset, which starts a pipeline_health run.

Backfill the data set's ten days with
``airflow backfill create --dag-id avazu_hourly_ingest --from-date 2014-10-21T00:00:00+00:00
--to-date 2014-10-30T23:00:00+00:00 --max-active-runs 2``. ``catchup`` is off, so a scheduler
started today runs only the latest hour (replay) instead of flooding through every hour since
2014. There is no ``end_date``: it would stop replay, and the backfill range is given on the
command line anyway; a backfill-mode run outside the Avazu span fails with a clear message.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from kafka_pipeline.assets import INGESTED_HOURS
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.operators.ingest import (
    AvazuHourPartitionSensor,
    IngestAvazuHourOperator,
    StageAvazuSourceOperator,
)

DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": pendulum.duration(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": pendulum.duration(minutes=10),
}
@dag(
    dag_id="avazu_hourly_ingest",
    description="Ingest one Avazu hour per run into the raw topic and its DLQ, exactly once",
    # Airflow 3's @hourly triggers at each hour with the run's logical date on it; the run
    # ingests the hour its logical date falls in (manual, scheduled and backfill runs alike).
    schedule="@hourly",
    start_date=pendulum.datetime(2014, 10, 21, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["avazu", "kafka", "ingestion"],
    render_template_as_native_obj=True,
    params={
        "mode": Param("as configured", type="string", enum=["as configured", "auto", "backfill", "replay"],
                      description="as configured: include/config/ingest.yaml's mode; auto: backfill for a 2014 hour, "
                                  "replay for today's; backfill: the run's hour is the Avazu hour; replay: today's "
                                  "hour mapped onto the ten Avazu days."),
        "source_uri": Param(None, type=["null", "string"], description="Avazu CSV to stage; empty: the config's."),
        "staging_uri": Param(None, type=["null", "string"], description="Partition folder or s3:// prefix; empty: the config's."),
        "chunk_rows": Param(None, type=["null", "integer"], minimum=1, description="Rows per chunk (one transaction each)."),
        "raw_topic": Param(None, type=["null", "string"], description="Topic for good rows; empty: topics.yaml's role raw."),
        "dlq_topic": Param(None, type=["null", "string"], description="Topic for dead letters; empty: topics.yaml's role dlq."),
        "checkpoint_topic": Param(None, type=["null", "string"], description="Checkpoint topic; empty: topics.yaml's role checkpoints."),
        "partition_wait_s": Param(None, type=["null", "number"], minimum=0,
                                  description="How long to wait for the hour's partition; empty: the config's."),
        "reingest": Param(False, type="boolean",
                          description="Write a finished hour again as a new generation (records carry ingest.generation)."),
    },
    doc_md=__doc__,
)
def avazu_hourly_ingest():
    @task(multiple_outputs=True)
    @fails_cleanly
    def resolve_hour(params=None, dag_run=None) -> dict:
        """The run's Avazu hour and the run's ingestion settings, checked once, for the next tasks."""
        from include.ingest.config import load_ingest_config
        from include.ingest.hours import assign_hour

        config = load_ingest_config().with_overrides({**params, "mode": None} if params["mode"] == "as configured"
                                                     else params)
        # Manual runs may have no logical date in Airflow 3; they stand for the hour they run in.
        moment = dag_run.logical_date or dag_run.run_after
        assignment = assign_hour(moment, config.mode, config.replay.offset_hours, config.replay.wrap,
                                 backfill_run=getattr(dag_run.run_type, "value", dag_run.run_type) == "backfill")
        return {
            **assignment.as_dict(),
            "config": config.as_dict(),
            "source_uri": config.source_uri,
            "staging_uri": config.staging_uri,
            "stage_before_ingest": config.stage_before_ingest,
            "generate_if_missing": config.as_dict()["generate_if_missing"],
            "partition_wait_timeout_s": config.partition_wait_timeout_s,
            "partition_poke_interval_s": config.partition_poke_interval_s,
            "reingest": bool(params.get("reingest")),
        }

    plan = resolve_hour()
    stage = StageAvazuSourceOperator(
        task_id="stage_source", source_uri=plan["source_uri"], staging_uri=plan["staging_uri"],
        enabled=plan["stage_before_ingest"], generate=plan["generate_if_missing"])
    wait = AvazuHourPartitionSensor(
        task_id="wait_for_partition", staging_uri=plan["staging_uri"], hour=plan["hour"],
        wait_timeout_s=plan["partition_wait_timeout_s"], poke_interval_s=plan["partition_poke_interval_s"])
    ingest = IngestAvazuHourOperator(
        task_id="ingest_hour", hour=plan["hour"], config=plan["config"], reingest=plan["reingest"],
        outlets=[INGESTED_HOURS])

    stage >> wait >> ingest


avazu_hourly_ingest()
