"""The brokers as the pipeline's topics see them: alive, led, replicated, with a controller.

Per declared topic and partition: offline (no leader), under-replicated (fewer in-sync replicas
than replicas) and below ``min.insync.replicas`` (acks=all producers - every one of ours - are
refused there). Cluster-wide: a controller is known and at least ``broker.min_brokers`` brokers
are alive. A broker that does not answer at all fails the check with the address it tried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType

from include.health.outcome import CheckOutcome, Metric, first_problems

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

_COLUMNS = ["topic", "partitions", "offline", "under_replicated", "below_min_isr", "min_insync"]


def check_brokers(inputs: HealthInputs, timeout: float = 15.0) -> CheckOutcome:
    admin, limits = inputs.admin, inputs.config.broker
    where = inputs.kafka_config.get("bootstrap.servers", "the configured brokers")
    try:
        cluster = admin.describe_cluster(request_timeout=timeout).result()
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        summary = (f"no broker answered at {where} within {timeout:.0f} s ({error.args[0].str()}); "
                   "look at the brokers' logs (`make stack-status` locally)")
        return CheckOutcome("brokers", False, summary, _COLUMNS,
                            metrics=[Metric("brokers_alive", 0.0, help="Brokers in the cluster's metadata")])
    problems = []
    if cluster.controller is None:
        problems.append("no controller is known to the cluster")
    alive = len(cluster.nodes)
    if alive < limits.min_brokers:
        problems.append(f"{alive} broker(s) alive, at least {limits.min_brokers} expected")
    names = [t for t in inputs.catalog.names() if t in metadata.topics]
    min_isr = _min_insync(admin, names, timeout)
    rows = []
    totals = {"offline": 0, "under_replicated": 0, "below_min_isr": 0}
    for topic in names:
        partitions = metadata.topics[topic].partitions.values()
        offline = [p.id for p in partitions if p.leader < 0]
        under = [p.id for p in partitions if len(p.isrs) < len(p.replicas)]
        below = [p.id for p in partitions if len(p.isrs) < min_isr.get(topic, 1)]
        for name, ids in (("offline", offline), ("under_replicated", under), ("below_min_isr", below)):
            totals[name] += len(ids)
        if offline:
            problems.append(f"{topic} partition(s) {_ids(offline)} have no leader (offline)")
        if under:
            problems.append(f"{topic} partition(s) {_ids(under)} are under-replicated")
        if below:
            problems.append(f"{topic} partition(s) {_ids(below)} have fewer in-sync replicas than its "
                            f"min.insync.replicas={min_isr.get(topic)}: producers with acks=all are refused there")
        rows.append({"topic": topic, "partitions": len(partitions), "offline": len(offline),
                     "under_replicated": len(under), "below_min_isr": len(below), "min_insync": min_isr.get(topic, "")})
    metrics = [Metric("brokers_alive", float(alive), help="Brokers in the cluster's metadata"),
               Metric("offline_partitions", float(totals["offline"]), help="Partitions of the pipeline's topics without a leader"),
               Metric("under_replicated_partitions", float(totals["under_replicated"]),
                      help="Partitions of the pipeline's topics with fewer in-sync replicas than replicas"),
               Metric("below_min_isr_partitions", float(totals["below_min_isr"]),
                      help="Partitions of the pipeline's topics with fewer in-sync replicas than min.insync.replicas")]
    controller = f"controller {cluster.controller.id}" if cluster.controller is not None else "no controller"
    if problems:
        return CheckOutcome("brokers", False, f"{first_problems(problems)}; look at the brokers' logs and "
                            f"`kafka-topics --describe --under-replicated-partitions` ({alive} broker(s), {controller})",
                            _COLUMNS, rows, metrics)
    return CheckOutcome("brokers", True, f"{alive} broker(s), {controller}; all {sum(r['partitions'] for r in rows)} "
                        f"partitions of {len(rows)} topics led and in sync", _COLUMNS, rows, metrics)


def _min_insync(admin, topics: list[str], timeout: float) -> dict[str, int]:
    if not topics:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics], request_timeout=timeout)
    found = {}
    for resource, future in futures.items():
        entry = future.result().get("min.insync.replicas")
        found[resource.name] = int(entry.value) if entry is not None and entry.value else 1
    return found


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (f" (+{len(ids) - 10})" if len(ids) > 10 else "")
