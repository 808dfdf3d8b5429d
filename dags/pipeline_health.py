"""pipeline_health: is the pipeline healthy? Eight checks that pass or fail on their own, and a report.

    consumer_lag -> throughput --\\
    dlq_ratio, reconciliation,   +--> report (always)
    ctr_reconciliation,          |
    topic_drift, registry_drift, |
    brokers ---------------------+--> healthy (only when every check passed)

Runs every hour and after every ingestion run (the ``avazu_ingested_hours`` asset). Each check
(include/health) reads Kafka, the registry, the staging manifests or the CTR store (the
``postgres_default`` connection: ctr_reconciliation, stream = batch), compares them with the
limits in include/config/health.yaml and fails its task with one sentence - what is wrong, by how
much, where to look - when it finds a problem; a finding is not retried, an unreachable broker
or registry is. ``report`` runs whatever the checks found: it writes a Markdown and an HTML report
with plots (lag over time, DLQ ratio per hour) to health.yaml's ``report_uri`` (a folder or
s3://), logs the summary table and pushes the figures to the Pushgateway as ``avazu_pipeline_*``
metrics, which Prometheus scrapes and alerts on (devstack/prometheus/alerts.yml). ``healthy`` is
the run's verdict: it fails (upstream failed) unless every check passed.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from include.health.checks import CHECKS as HEALTH_CHECKS
from kafka_pipeline.assets import INGESTED_HOURS
from kafka_pipeline.operators.health import PipelineCheckOperator, PipelineHealthReportOperator

CHECKS = list(HEALTH_CHECKS)
# Throughput reads the lag window this run's lag check has just added to, and runs either way; it
# times the ingestion runs from the asset's events.
AFTER_LAG = {"trigger_rule": "all_done", "inlets": [INGESTED_HOURS]}


@dag(
    dag_id="pipeline_health",
    description="Consumer lag, DLQ ratio, reconciliation, stream = batch CTR, throughput, drift and broker checks, "
                "with a report and metrics",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("15 * * * *", timezone="UTC"), assets=INGESTED_HOURS),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # The lag window is kept between runs: one run at a time adds its samples in order.
    max_active_runs=1,
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": pendulum.duration(seconds=20)},
    tags=["kafka", "monitoring", "health"],
    params={
        "staging_uri": Param("", type="string",
                             description="Where the ingested hours were staged (the reconciliation reads their manifests); "
                                         "empty: include/config/ingest.yaml's."),
    },
    doc_md=__doc__,
)
def pipeline_health():
    checks = {name: PipelineCheckOperator(task_id=name, check=name, staging_uri="{{ params.staging_uri }}",
                                         **(AFTER_LAG if name == "throughput" else {}))
              for name in CHECKS}
    checks["consumer_lag"] >> checks["throughput"]

    report = PipelineHealthReportOperator(task_id="report", checks=CHECKS)

    @task
    def healthy() -> str:
        """The run's verdict: reached only when every check passed."""
        return f"all {len(CHECKS)} checks passed"

    verdict = healthy()
    for check in checks.values():
        check >> [report, verdict]


pipeline_health()
