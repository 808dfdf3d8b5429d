"""The health checks by name, what each is given, and how one is run.

Each check is a function ``HealthInputs -> CheckOutcome`` that only reads (Kafka, the registry,
the staging manifests, the CTR store, its own state); a finding is a :class:`CheckOutcome` with
``ok=False``, not an exception. An unreachable broker, registry or store is an error of the check
run (retriable), except for the broker check, whose finding it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.health.broker import check_brokers
from include.health.config import HealthConfig
from include.health.ctr import check_ctr_reconciliation
from include.health.drift import check_registry_drift, check_topic_drift
from include.health.hours import check_dlq_ratio, check_reconciliation
from include.health.lag import check_consumer_lag
from include.health.outcome import CheckOutcome
from include.health.throughput import check_throughput
from include.ingest.config import IngestConfig
from include.kafka.registry import schema_fetcher
from include.kafka_admin.catalog import TopicCatalog

log = logging.getLogger(__name__)


@dataclass
class HealthInputs:
    """Everything a check reads: the settings, the clients and the recent ingestion runs."""

    config: HealthConfig
    kafka_config: dict[str, Any]
    registry: SchemaRegistryClient
    ingest: IngestConfig  # which topics and staging the ingestion uses
    catalog: TopicCatalog  # the declared topics and subjects (drift, broker health)
    # What the recent ingest_hour runs reported (their asset events' extra), newest first.
    runs: list[dict[str, Any]] = field(default_factory=list)
    # The CTR store's libpq URL (the postgres_default connection); None: not configured.
    store_url: str | None = None
    now: float = field(default_factory=time.time)
    log: logging.Logger = log
    cache: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def admin(self) -> AdminClient:
        return AdminClient(self.kafka_config)

    @cached_property
    def fetch_schema(self) -> Callable[[int], str]:
        """A schema by id; an id the registry does not hold is permanent, a registry that fails retriable."""
        return schema_fetcher(self.registry)


@dataclass(frozen=True)
class HealthCheck:
    """One check: the function that runs it, and what it compares (task docs, the report)."""

    run: Callable[[HealthInputs], CheckOutcome]
    description: str
    # Where it reads: a check that does not read Kafka runs while the broker is away.
    reads_kafka: bool = True
    reads_store: bool = False


# The checks by name, in the order the DAG and the report list them.
CHECKS: dict[str, HealthCheck] = {
    "consumer_lag": HealthCheck(
        check_consumer_lag, "consumer lag per group and partition (records, seconds, status over a window)"),
    "dlq_ratio": HealthCheck(check_dlq_ratio, "dead-lettered share of each ingested hour, from the checkpoints"),
    "reconciliation": HealthCheck(
        check_reconciliation, "rows ingested of each recent hour = its records in the raw topic + the DLQ"),
    "ctr_reconciliation": HealthCheck(
        check_ctr_reconciliation, "stream = batch: each closed hour's CTR counts per dimension value in ctr_hourly "
                                  "= ctr_batch_hourly", reads_kafka=False, reads_store=True),
    "throughput": HealthCheck(
        check_throughput, "rows/s of recent ingestion runs and records/s of the always-on stream processors"),
    "topic_drift": HealthCheck(check_topic_drift, "declared topic configs and partitions against the cluster"),
    "registry_drift": HealthCheck(
        check_registry_drift, "declared subjects, latest versions and levels against the registry"),
    "brokers": HealthCheck(
        check_brokers, "offline and under-replicated partitions, ISR below min.insync, controller"),
}


def run_check(name: str, inputs: HealthInputs) -> CheckOutcome:
    """Run the check ``name`` and time it; logs its one-line finding and its table."""
    from include.kafka_admin.topics import format_table

    began = time.monotonic()
    outcome = CHECKS[name].run(inputs)
    outcome.elapsed_s = round(time.monotonic() - began, 3)
    inputs.log.info("%s: %s (%.1f s): %s", name, outcome.status, outcome.elapsed_s, outcome.summary)
    if outcome.rows:
        inputs.log.info("%s:\n%s", name, format_table(outcome.rows, outcome.columns))
    return outcome
