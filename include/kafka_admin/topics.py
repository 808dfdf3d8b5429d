"""Bring the cluster's topics in line with the declarations: create, report drift, reconcile.

Nothing here deletes a topic or removes partitions. A plan is computed first (what exists, what
differs), then applied; a dry run only plans.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from include.errors import PermanentError
from include.kafka_admin.catalog import TopicCatalog, TopicSpec

log = logging.getLogger(__name__)


class ProvisioningError(PermanentError):
    """A declaration the cluster cannot be brought to (e.g. fewer partitions than it has)."""


@dataclass
class TopicPlan:
    """What the cluster has for one declared topic, against what is declared."""

    topic: str
    declared_partitions: int
    replication_factor: int  # declared, capped to the broker count
    configs: dict[str, str] = field(default_factory=dict)  # declared, min.insync.replicas capped to the replication
    actual_partitions: int | None = None  # None: the topic does not exist
    actual_replication_factor: int | None = None
    config_drift: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # name: (actual, declared)

    @property
    def exists(self) -> bool:
        return self.actual_partitions is not None

    @property
    def in_sync(self) -> bool:
        return self.exists and not self.config_drift and not self.partitions_to_add and not self.replication_drift

    @property
    def partitions_to_add(self) -> int:
        return max(0, self.declared_partitions - (self.actual_partitions or 0)) if self.exists else 0

    @property
    def replication_drift(self) -> bool:
        return self.exists and self.actual_replication_factor != self.replication_factor


@dataclass
class TopicOutcome:
    """One row of the result table a provisioning run returns."""

    topic: str
    action: str  # created | altered | grown | altered+grown | unchanged | drift-left | would-...
    partitions: str
    details: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def ensure_topics(admin: AdminClient, topics: Iterable[str], partitions: int = 3,
                  timeout: float = 30.0) -> list[str]:
    """Create each missing topic with ``partitions`` partitions; return the ones this call created.

    Existing topics are left as they are (their partition count included): declared topics are
    reconciled by the provisioning DAG, this only makes a fresh broker usable. The replication
    factor is the broker's default.
    """
    wanted = list(dict.fromkeys(topics))
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing],
        operation_timeout=timeout, request_timeout=timeout)
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            # Another task created it between the listing and now.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return sorted(created)


def capped_replication(spec: TopicSpec, brokers: int) -> int:
    """The declared replication factor, capped to the cluster size with a warning."""
    if spec.replication_factor > brokers:
        log.warning("topic %s declares replication factor %d but the cluster has %d broker(s): using %d",
                    spec.name, spec.replication_factor, brokers, brokers)
        return brokers
    return spec.replication_factor


def capped_configs(spec: TopicSpec, replication: int) -> dict[str, str]:
    """The declared configs, with ``min.insync.replicas`` no higher than the (capped) replication.

    Three replicas with two in sync is the declaration; on a single-node cluster no write could
    ever have two in-sync replicas, so there it is 1, like the replication factor (and said once).
    """
    configs = dict(spec.configs)
    declared = configs.get("min.insync.replicas")
    if declared is not None and int(declared) > replication:
        log.warning("topic %s declares min.insync.replicas %s but has %d replica(s): using %d",
                    spec.name, declared, replication, replication)
        configs["min.insync.replicas"] = str(replication)
    return configs


def plan_topics(admin: AdminClient, catalog: TopicCatalog, timeout: float = 30.0) -> list[TopicPlan]:
    """Compare every declared topic with the cluster (partitions, replication, declared configs)."""
    metadata = admin.list_topics(timeout=timeout)
    brokers = max(1, len(metadata.brokers))
    plans = []
    for spec in catalog.topics:
        replication = capped_replication(spec, brokers)
        plan = TopicPlan(spec.name, spec.partitions, replication, capped_configs(spec, replication))
        existing = metadata.topics.get(spec.name)
        if existing is not None and existing.error is None:
            plan.actual_partitions = len(existing.partitions)
            plan.actual_replication_factor = min(
                (len(p.replicas) for p in existing.partitions.values()), default=0)
        plans.append(plan)

    resources = [ConfigResource(ResourceType.TOPIC, p.topic) for p in plans if p.exists]
    if resources:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        actual_configs = {res.name: future.result() for res, future in futures.items()}
        for plan in plans:
            if not plan.exists:
                continue
            actual = actual_configs[plan.topic]
            for name, declared in plan.configs.items():
                entry = actual.get(name)
                value = entry.value if entry is not None else None
                if value != declared:
                    plan.config_drift[name] = (value, declared)
    return plans


def refuse_shrinks(plans: list[TopicPlan]) -> None:
    """Kafka cannot remove partitions: a declaration with fewer than exist fails the whole run."""
    shrinks = [p for p in plans if p.exists and p.declared_partitions < p.actual_partitions]
    if shrinks:
        detail = "; ".join(f"{p.topic} declares {p.declared_partitions} but has {p.actual_partitions}"
                           for p in shrinks)
        raise ProvisioningError(
            f"partitions can only grow, and the declarations ask for fewer ({detail}): "
            "declare at least the current count; nothing was changed")


def _drift_text(plan: TopicPlan) -> str:
    parts = [f"{name}: {actual!s} -> {declared}" for name, (actual, declared) in sorted(plan.config_drift.items())]
    if plan.partitions_to_add:
        parts.append(f"partitions: {plan.actual_partitions} -> {plan.declared_partitions}")
    if plan.replication_drift:
        parts.append(f"replication factor {plan.actual_replication_factor} (declared {plan.replication_factor}; "
                     "change it with a partition reassignment)")
    return ", ".join(parts)


def apply_plans(admin: AdminClient, catalog: TopicCatalog, plans: list[TopicPlan], *,
                fix_drift: bool, grow_partitions: bool, dry_run: bool,
                timeout: float = 30.0) -> list[TopicOutcome]:
    """Create missing topics and, when asked, fix config drift and grow partitions."""
    refuse_shrinks(plans)
    outcomes: list[TopicOutcome] = []
    for plan in plans:
        spec = catalog[plan.topic]
        if not plan.exists:
            action = "would-create" if dry_run else "created"
            if not dry_run:
                _create(admin, spec, plan.replication_factor, plan.configs, timeout)
            outcomes.append(TopicOutcome(plan.topic, action, str(spec.partitions),
                                         f"replication {plan.replication_factor}, {len(spec.configs)} configs"))
            continue
        if plan.in_sync:
            outcomes.append(TopicOutcome(plan.topic, "unchanged", str(plan.actual_partitions)))
            continue

        done, left = [], []
        if plan.config_drift:
            if fix_drift and not dry_run:
                _alter_configs(admin, plan, timeout)
                done.append("altered")
            else:
                left.append("config")
        if plan.partitions_to_add:
            if grow_partitions and not dry_run:
                _grow(admin, plan, timeout)
                done.append("grown")
            else:
                left.append("partitions")
        if plan.replication_drift:
            left.append("replication")
        if dry_run:
            wanted = ["alter"] * bool(plan.config_drift) + ["grow"] * bool(plan.partitions_to_add)
            action = "would-" + "+".join(wanted) if wanted else "drift-left"
        else:
            action = "+".join(done + ["drift-left"] * bool(left))
        partitions = (f"{plan.actual_partitions}->{plan.declared_partitions}"
                      if plan.partitions_to_add else str(plan.actual_partitions))
        outcomes.append(TopicOutcome(plan.topic, action, partitions, _drift_text(plan)))
    return outcomes


def _create(admin: AdminClient, spec: TopicSpec, replication: int, configs: dict[str, str], timeout: float) -> None:
    topic = NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=replication, config=configs)
    future = admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)[spec.name]
    try:
        future.result()
    except KafkaException as error:
        raise ProvisioningError(f"creating topic {spec.name} failed: {error.args[0].str()}") from None
    _wait_until(lambda: _partition_count(admin, spec.name) == spec.partitions, timeout,
                f"topic {spec.name} was created but its metadata did not show {spec.partitions} partitions")
    log.info("created topic %s (%d partitions, replication %d)", spec.name, spec.partitions, replication)


def _alter_configs(admin: AdminClient, plan: TopicPlan, timeout: float) -> None:
    entries = [ConfigEntry(name, declared, incremental_operation=AlterConfigOpType.SET)
               for name, (_, declared) in sorted(plan.config_drift.items())]
    resource = ConfigResource(ResourceType.TOPIC, plan.topic, incremental_configs=entries)
    future = admin.incremental_alter_configs([resource], request_timeout=timeout)[resource]
    try:
        future.result()
    except KafkaException as error:
        raise ProvisioningError(f"altering configs of {plan.topic} failed: {error.args[0].str()}") from None
    wanted = {name: declared for name, (_, declared) in plan.config_drift.items()}
    _wait_until(lambda: _current_configs(admin, plan.topic, wanted) == wanted, timeout,
                f"configs of {plan.topic} were altered but the broker still describes the old values")
    log.info("altered %s: %s", plan.topic, _drift_text(plan))


def _grow(admin: AdminClient, plan: TopicPlan, timeout: float) -> None:
    future = admin.create_partitions([NewPartitions(plan.topic, plan.declared_partitions)],
                                     operation_timeout=timeout, request_timeout=timeout)[plan.topic]
    try:
        future.result()
    except KafkaException as error:
        raise ProvisioningError(f"growing {plan.topic} to {plan.declared_partitions} partitions failed: "
                                f"{error.args[0].str()}") from None
    _wait_until(lambda: _partition_count(admin, plan.topic) == plan.declared_partitions, timeout,
                f"{plan.topic} was grown but its metadata did not show {plan.declared_partitions} partitions")
    log.info("grew %s from %d to %d partitions", plan.topic, plan.actual_partitions, plan.declared_partitions)


def _partition_count(admin: AdminClient, topic: str) -> int | None:
    found = admin.list_topics(topic, timeout=10).topics.get(topic)
    return len(found.partitions) if found is not None and found.error is None else None


def _current_configs(admin: AdminClient, topic: str, names) -> dict[str, str | None]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result()
    return {name: entries[name].value if name in entries else None for name in names}


def _wait_until(condition, timeout: float, failure: str) -> None:
    """Admin calls return when the controller has the change; brokers' metadata follows shortly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ProvisioningError(f"{failure} within {timeout:.0f} s")
        time.sleep(0.2)


def verify_topics(admin: AdminClient, catalog: TopicCatalog, timeout: float = 30.0) -> list[TopicPlan]:
    """Describe everything again; raise ProvisioningError naming each topic that differs."""
    plans = plan_topics(admin, catalog, timeout)
    off = [p for p in plans if not p.in_sync]
    if off:
        detail = "; ".join(f"{p.topic}: " + ("missing" if not p.exists else _drift_text(p)) for p in off)
        raise ProvisioningError(
            f"{len(off)} topic(s) differ from {catalog.source.name} after provisioning ({detail}); "
            "run kafka_provisioning with fix_drift / grow_partitions, or change the declarations")
    return plans


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table for the task log."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns} if rows else {
        c: len(c) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, "  ".join("-" * widths[c] for c in columns), *body])
