"""ctr_batch: the hourly CTR aggregates of each staged Avazu hour, computed with DuckDB, into PostgreSQL.

staged_hours -> compute_hour[one mapped task per hour]

The batch side of "stream = batch" (issue 21): the impressions and clicks per Avazu hour x
dimension (all, site_id, app_id, device_type, banner_pos) x value that the Flink job writes to
``ctr_hourly``, computed again from the staged hour files into ``ctr_batch_hourly``, which
pipeline_health's ``ctr_reconciliation`` check compares with the stream's, exactly.

* Runs after every ingestion run (the ``avazu_ingested_hours`` asset): ``staged_hours`` takes the
  hours the triggering runs completed (events that arrive together make one run with all their
  hours). A manual run names its ``hours``.
* ``compute_hour`` (include/ctr/batch.py) reads the hour's staged file once: the rows the row
  contract accepts and the dead letters the DLQ reprocessing repairs (dlq.yaml's rules) - the rows
  that reach the raw topic - grouped by DuckDB; its counts must match the staging manifest's.
  It replaces the hour's rows in one transaction, so a rerun (or a retry) rewrites the same rows.
* Progress and counts are in the task log (rows = good + repaired + parked, rows/s) and XCom.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from kafka_pipeline.assets import CTR_BATCH_HOURS, INGESTED_HOURS
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.operators.ctr import CtrBatchHourOperator


@dag(
    dag_id="ctr_batch",
    description="Hourly CTR aggregates of each staged Avazu hour, with DuckDB, into ctr_batch_hourly",
    schedule=INGESTED_HOURS,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # Runs rebuild shared hours in turn anyway (an advisory lock); one at a time keeps their logs apart.
    max_active_runs=1,
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    tags=["ctr", "batch", "duckdb"],
    params={
        "hours": Param([], type="array", items={"type": "integer"},
                       description="Avazu hours (YYMMDDHH) to compute; empty: those of the triggering ingestion runs."),
        "staging_uri": Param("", type="string",
                             description="Where the hours are staged; empty: include/config/ingest.yaml's."),
    },
    doc_md=__doc__,
)
def ctr_batch():
    @task
    @fails_cleanly
    def staged_hours(params=None, triggering_asset_events=None) -> list[int]:
        """The hours to compute: the run's ``hours``, else those the triggering ingestion runs completed."""
        from include.ctr.batch import asked_hours

        events = triggering_asset_events.get(INGESTED_HOURS, []) if triggering_asset_events else []
        return asked_hours(params["hours"], [event.extra or {} for event in events])

    CtrBatchHourOperator.partial(task_id="compute_hour", staging_uri="{{ params.staging_uri }}",
                                 outlets=[CTR_BATCH_HOURS]).expand(hour=staged_hours())


ctr_batch()
