"""The brokers as the pipeline's topics see them: alive, led, replicated, with a controller.

Per declared topic and partition: offline (no leader), under-replicated (fewer in-sync replicas
than replicas) and below ``min.insync.replicas`` (acks=all producers - every one of ours - are
refused there). Cluster-wide: a controller is known and at least ``broker.min_brokers`` brokers
are alive. A broker that does not answer at all fails the check with the address it tried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import KafkaException

from include.health.outcome import CheckOutcome, Metric, first_problems
from include.kafka.replicas import min_insync_replicas

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

_COLUMNS = ["topic", "partitions", "offline", "under_replicated", "below_min_isr", "min_insync"]


def check_brokers(inputs: HealthInputs, timeout: float = 15.0) -> CheckOutcome:
    admin, limits = inputs.admin, inputs.config.broker
    where = inputs.kafka_config.get("bootstrap.servers", "the configured brokers")
    try:
        # Metadata, which any broker answers; DescribeCluster goes to the controller the client
        # last heard of, and times out while that one is the broker that is down.
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        summary = (f"no broker answered at {where} within {timeout:.0f} s ({error.args[0].str()}); "
                   "look at the brokers' logs (`make stack-status` locally)")
        return CheckOutcome("brokers", False, summary, _COLUMNS,
                            metrics=[Metric("brokers_alive", 0.0, help="Brokers in the cluster's metadata")])
    problems = []
    if metadata.controller_id < 0:
        problems.append("no controller is known to the cluster")
    alive = len(metadata.brokers)
    if alive < limits.min_brokers:
        problems.append(f"{alive} broker(s) alive, at least {limits.min_brokers} expected")
    names = [t for t in inputs.catalog.names() if t in metadata.topics]
    min_isr = min_insync_replicas(admin, names, timeout)
    rows = []
    totals = {"offline": 0, "under_replicated": 0, "below_min_isr": 0}
    # A broker that holds replicas but is not in the cluster is down (or fenced): name it first.
    nodes = set(metadata.brokers)
    replicas_of: dict[int, int] = {}
    for topic in names:
        for p in metadata.topics[topic].partitions.values():
            for replica in set(p.replicas) - nodes:
                replicas_of[replica] = replicas_of.get(replica, 0) + 1
    if replicas_of:
        problems.insert(0, "broker(s) " + ", ".join(f"{b} (replicas of {n} partition(s))" for b, n in sorted(replicas_of.items()))
                        + " not in the cluster")
    found: dict[str, list[str]] = {"offline": [], "under_replicated": [], "below_min_isr": []}
    for topic in names:
        partitions = metadata.topics[topic].partitions.values()
        offline = [p.id for p in partitions if p.leader < 0]
        under = [p.id for p in partitions if len(p.isrs) < len(p.replicas)]
        below = [p.id for p in partitions if len(p.isrs) < min_isr.get(topic, 1)]
        for kind, ids in (("offline", offline), ("under_replicated", under), ("below_min_isr", below)):
            totals[kind] += len(ids)
            if ids:
                limit = f" (min.insync.replicas={min_isr.get(topic)})" if kind == "below_min_isr" else ""
                found[kind].append(f"{topic} [{_ids(ids)}]{limit}")
        rows.append({"topic": topic, "partitions": len(partitions), "offline": len(offline),
                     "under_replicated": len(under), "below_min_isr": len(below), "min_insync": min_isr.get(topic, "")})
    if found["offline"]:
        problems.append(f"partitions without a leader (offline): {'; '.join(found['offline'])}")
    if found["under_replicated"]:
        problems.append(f"under-replicated partitions: {'; '.join(found['under_replicated'])}")
    if found["below_min_isr"]:
        problems.append("partitions with fewer in-sync replicas than min.insync.replicas, where producers with "
                        f"acks=all are refused: {'; '.join(found['below_min_isr'])}")
    metrics = [Metric("brokers_alive", float(alive), help="Brokers in the cluster's metadata"),
               Metric("brokers_missing", float(len(replicas_of)),
                      help="Brokers that hold replicas of the pipeline's topics but are not in the cluster"),
               Metric("offline_partitions", float(totals["offline"]), help="Partitions of the pipeline's topics without a leader"),
               Metric("under_replicated_partitions", float(totals["under_replicated"]),
                      help="Partitions of the pipeline's topics with fewer in-sync replicas than replicas"),
               Metric("below_min_isr_partitions", float(totals["below_min_isr"]),
                      help="Partitions of the pipeline's topics with fewer in-sync replicas than min.insync.replicas")]
    controller = f"controller {metadata.controller_id}" if metadata.controller_id >= 0 else "no controller"
    if problems:
        return CheckOutcome("brokers", False, f"{first_problems(problems)}; look at the brokers' logs and "
                            f"`kafka-topics --describe --under-replicated-partitions` ({alive} broker(s), {controller})",
                            _COLUMNS, rows, metrics)
    return CheckOutcome("brokers", True, f"{alive} broker(s), {controller}; all {sum(r['partitions'] for r in rows)} "
                        f"partitions of {len(rows)} topics led and in sync", _COLUMNS, rows, metrics)


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (f" (+{len(ids) - 10})" if len(ids) > 10 else "")
