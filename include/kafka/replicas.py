"""Why acks=all writes stall: the partitions whose answering in-sync replicas are too few.

A transactional producer writes with ``acks=all``: every record waits for the partition's
in-sync replicas, and the broker refuses it once fewer than ``min.insync.replicas`` remain. With
two of a three-node KRaft cluster down the controller quorum is lost too, so the survivor's
metadata still lists the dead brokers as alive and in sync: the records neither fail nor get
acknowledged, they time out. The metadata alone cannot tell that apart from a slow broker, so the
brokers it lists are asked directly (a TCP connect) and only those that answer count.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

log = logging.getLogger(__name__)

# librdkafka settings that say how to reach the cluster; an admin client for the topic configs
# gets these and nothing of the producer's own.
_CONNECTION_PREFIXES = ("bootstrap.servers", "security.", "sasl.", "ssl.", "client.id")


@dataclass(frozen=True)
class ReplicaShortage:
    """Partitions that cannot take acks=all writes while some brokers do not answer."""

    down: dict[int, str]  # broker id -> host:port of the brokers that do not answer
    partitions: dict[str, list[int]]  # topic -> partitions short of in-sync replicas
    in_sync: dict[str, int]  # topic -> fewest answering in-sync replicas among them
    min_insync: dict[str, int]  # topic -> its min.insync.replicas

    def sentence(self) -> str:
        shorts = "; ".join(
            f"{topic} partition(s) {', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''} "
            f"have {self.in_sync[topic]} answering in-sync replica(s) where min.insync.replicas is {self.min_insync[topic]}"
            for topic, ids in self.partitions.items())
        brokers = ", ".join(f"{node} at {address}" for node, address in sorted(self.down.items()))
        return (f"too few in-sync replicas: {shorts}; broker(s) {brokers} do not answer, "
                "so acks=all writes wait until they return")


def broker_answers(address: str, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def cluster_admin(kafka_config: dict[str, Any]) -> AdminClient:
    """An admin client with the connection settings of ``kafka_config`` (a producer's has more)."""
    return AdminClient({k: v for k, v in kafka_config.items() if k.startswith(_CONNECTION_PREFIXES)})


def find_replica_shortage(kafka_config: dict[str, Any], topics: Sequence[str], min_insync: dict[str, int],
                          timeout: float = 10.0) -> ReplicaShortage | None:
    """The partitions of ``topics`` with fewer answering in-sync replicas than they need, if any.

    ``min_insync`` is the topics' min.insync.replicas as the caller read them while the cluster was
    whole: a cluster with brokers down may not answer DescribeConfigs in time. None also when the
    cluster cannot be asked at all: the caller's own error says that better.
    """
    try:
        metadata = cluster_admin(kafka_config).list_topics(timeout=timeout)
    except KafkaException:
        return None
    addresses = {node: f"{b.host}:{b.port}" for node, b in metadata.brokers.items()}
    down = {node: address for node, address in addresses.items() if not broker_answers(address)}
    if not down:
        return None
    present = {t: metadata.topics[t].partitions.values() for t in dict.fromkeys(topics) if t in metadata.topics}
    return short_partitions(present, down, min_insync)


def short_partitions(partitions: dict[str, Any], down: dict[int, str],
                     min_insync: dict[str, int]) -> ReplicaShortage | None:
    """Which of ``partitions`` (topic -> its partitions' metadata: ``id``, ``isrs``) have fewer
    answering in-sync replicas than ``min_insync`` asks (1 when not given), with the brokers in
    ``down`` not answering. A partition whose leader is down but which keeps enough answering
    in-sync replicas is not short: the controller is electing a new leader among them."""
    short: dict[str, list[int]] = {}
    in_sync: dict[str, int] = {}
    for topic, described in partitions.items():
        needed = min_insync.get(topic, 1)
        for p in sorted(described, key=lambda p: p.id):
            answering = [r for r in p.isrs if r not in down]
            if len(answering) < needed:
                short.setdefault(topic, []).append(p.id)
                in_sync[topic] = min(in_sync.get(topic, len(answering)), len(answering))
    if not short:
        return None
    return ReplicaShortage(down, short, in_sync, {t: min_insync.get(t, 1) for t in short})


def min_insync_replicas(admin: AdminClient, topics: list[str], timeout: float) -> dict[str, int]:
    """Each topic's min.insync.replicas; one whose config does not come back counts as 1."""
    if not topics:
        return {}
    found: dict[str, int] = {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics], request_timeout=timeout)
    for resource, future in futures.items():
        try:
            entry = future.result(timeout=timeout).get("min.insync.replicas")
        except Exception as error:  # noqa: BLE001 - the broker count alone decides then
            log.info("min.insync.replicas of %s did not come back: %s", resource.name, error)
            continue
        found[resource.name] = int(entry.value) if entry is not None and entry.value else 1
    return {t: found.get(t, 1) for t in topics}
