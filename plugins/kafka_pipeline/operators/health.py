"""Pipeline-health operators: one check per task (include.health), and the report over all of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator

from include.health.checks import CHECKS, HealthInputs, run_check
from include.health.config import load_health_config
from include.health.metrics import push_metrics
from include.health.outcome import CheckOutcome
from include.health.report import summary_table, write_report
from include.ingest.config import load_ingest_config
from include.kafka_admin.catalog import load_catalog
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook, postgres_url

# The XCom key under which a check leaves its outcome, also when it fails.
OUTCOME_KEY = "outcome"


class PipelineCheckOperator(BaseOperator):
    """Run one health check (a name of ``include.health.checks.CHECKS``); a finding fails the task.

    The outcome goes to XCom under ``outcome`` either way, for the report. The recent ingestion
    runs are the events of the task's inlets (the ingest DAG's asset), newest first.

    :param check: the check's name
    :param staging_uri: where the ingested hours were staged; empty: include/config/ingest.yaml's (templated)
    :param postgres_conn_id: the CTR store's connection (checks that read it)
    """

    template_fields: Sequence[str] = ("check", "staging_uri")
    ui_color = "#e4ecf7"

    def __init__(self, *, check: str, staging_uri: str | None = None,
                 kafka_config_id: str = KafkaClusterHook.default_conn_name,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name,
                 postgres_conn_id: str = "postgres_default", **kwargs: Any):
        if check not in CHECKS:
            raise ValueError(f"unknown health check {check!r}; the checks are {', '.join(CHECKS)}")
        kwargs.setdefault("doc_md", f"Health check `{check}`: {CHECKS[check].description} (include/health).")
        super().__init__(**kwargs)
        self.check = check
        self.staging_uri = staging_uri
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id
        self.postgres_conn_id = postgres_conn_id

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        config = load_health_config()
        runs = _recent_runs(context, self.inlets, config.throughput.recent_runs)
        kafka = KafkaClusterHook(self.kafka_config_id)
        registry = SchemaRegistryHook(self.schema_registry_conn_id)
        check = CHECKS[self.check]
        # An unreachable broker is the brokers check's finding; the CTR store's check reads no Kafka.
        if self.check != "brokers" and check.reads_kafka:
            kafka.ensure_reachable()
            registry.ensure_reachable()
        inputs = HealthInputs(config=config, kafka_config=kafka.client_config(), registry=registry.get_conn(),
                              ingest=load_ingest_config().with_overrides({"staging_uri": self.staging_uri}),
                              catalog=load_catalog(), runs=runs, log=self.log,
                              store_url=postgres_url(self.postgres_conn_id) if check.reads_store else None)
        outcome = run_check(self.check, inputs)
        context["ti"].xcom_push(key=OUTCOME_KEY, value=outcome.as_dict())
        outcome.raise_if_failed()
        return {"check": outcome.check, "status": outcome.status, "summary": outcome.summary}


def _recent_runs(context: Any, inlets: list, limit: int) -> list[dict[str, Any]]:
    runs = []
    for inlet in inlets or []:
        if isinstance(inlet, Asset):
            events = context["inlet_events"][inlet].ascending(False).limit(limit)
            runs += [{**(event.extra or {}), "at": event.timestamp.isoformat()} for event in events]
    return sorted(runs, key=lambda run: run["at"], reverse=True)[:limit]


class PipelineHealthReportOperator(BaseOperator):
    """Write the report (Markdown, HTML, plots) of the run's checks, push their metrics, log the table.

    Runs whatever the checks found (``trigger_rule="all_done"``); a check with no outcome in XCom
    (it crashed, or could not reach Kafka) is reported as ERROR.

    :param checks: the task ids of the check tasks
    :param report_uri: folder or s3:// prefix for the report; empty: include/config/health.yaml's (templated)
    :param pushgateway_url: the Pushgateway; empty: ``$PUSHGATEWAY_URL``; neither: metrics are not pushed (templated)
    """

    template_fields: Sequence[str] = ("report_uri", "pushgateway_url")
    ui_color = "#eef2e4"

    def __init__(self, *, checks: list[str], report_uri: str | None = None, pushgateway_url: str | None = None,
                 **kwargs: Any):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.checks = list(checks)
        self.report_uri = report_uri
        self.pushgateway_url = pushgateway_url

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        config = load_health_config()
        ti = context["ti"]
        outcomes, missing = [], []
        for task_id in self.checks:
            found = ti.xcom_pull(task_ids=task_id, key=OUTCOME_KEY)
            if found:
                outcomes.append(CheckOutcome.from_dict(found))
            else:
                missing.append(task_id)
        location = write_report(outcomes, self.report_uri or config.report_uri, ti.run_id, missing=missing,
                                dlq_threshold=config.dlq.max_ratio)
        self.log.info("pipeline health:\n%s", summary_table(outcomes, missing))
        self.log.info("report: %s (latest: %s)", location.html, location.latest_html)
        url = self.pushgateway_url or os.environ.get("PUSHGATEWAY_URL", "")
        pushed = 0
        if url:
            pushed = push_metrics(url, outcomes, missing)
            self.log.info("pushed %d series (avazu_pipeline_*) to the Pushgateway at %s", pushed, url)
        else:
            self.log.warning("no Pushgateway configured (PUSHGATEWAY_URL): the metrics were not pushed")
        failed = [o.check for o in outcomes if not o.ok]
        return {"report": location.as_dict(), "failed": failed, "missing": missing, "series_pushed": pushed,
                "pushgateway": url, "checks": [{"check": o.check, "status": o.status, "summary": o.summary,
                                                "seconds": o.elapsed_s} for o in outcomes]}
