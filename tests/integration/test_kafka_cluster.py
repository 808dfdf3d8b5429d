"""The stack's three-node KRaft cluster (KAFKA_BROKERS=3) on ports of its own: started, probed and
stopped as one service, replicated three ways with two in sync required, and still taking
exactly-once writes with one node killed."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devstack import Stack, StackSettings
from devstack.probes import free_ports, port_in_use
from devstack.stack import KAFKA_NODE_PORT_STEP
from include.kafka.reader import read_topic
from include.kafka.transactions import TransactionalProducer

pytestmark = pytest.mark.integration


def _ports_with_two_more_nodes_free() -> tuple[int, int, int]:
    """Three base ports whose +100 and +200 are free too (nodes 2 and 3 take those)."""
    for _ in range(20):
        ports = free_ports(3)
        taken = [p + KAFKA_NODE_PORT_STEP * n for p in ports for n in (1, 2)]
        if not any(port_in_use(p) for p in taken) and not set(taken) & set(ports):
            return ports[0], ports[1], ports[2]
    raise AssertionError("no free ports for a three-node cluster")


@pytest.fixture
def cluster(tmp_path, local_stack):
    """A cluster of our own; local_stack makes sure the jar cache is filled."""
    client, controller, metrics = _ports_with_two_more_nodes_free()
    settings = StackSettings(home=tmp_path / "devstack", kafka_port=client, kafka_controller_port=controller,
                             kafka_metrics_port=metrics, kafka_brokers=3, kafka_heap="512m")
    stack = Stack(settings)
    yield stack
    stack.stop(["kafka"], echo=lambda line: None)


def test_three_nodes_start_as_one_service_replicate_and_survive_a_killed_node(cluster):
    lines: list[str] = []
    cluster.start(["kafka"], echo=lines.append)
    assert lines == ["  kafka-1: starting", "  kafka-2: starting", "  kafka-3: starting"]
    statuses = cluster.status(["kafka"])
    assert [(s.name, s.state) for s in statuses] == [(f"kafka-{n}", "running") for n in (1, 2, 3)]
    assert len({s.endpoint for s in statuses}) == 3 and len({s.log for s in statuses}) == 3
    bootstrap = cluster.environment()["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap.count(",") == 2
    config = {"bootstrap.servers": bootstrap}

    admin = AdminClient(config)
    deadline = time.monotonic() + 60
    while len(admin.list_topics(timeout=10).brokers) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    metadata = admin.list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3] and metadata.controller_id in (1, 2, 3)
    topic = f"cluster_{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(60)
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(sorted(p.replicas) == [1, 2, 3] and len(p.isrs) == 3 for p in described.partitions.values())

    def write(tag: str, count: int) -> None:
        producer = TransactionalProducer(config, f"cluster-{tag}-{uuid.uuid4().hex[:6]}", label=f"cluster {tag}")
        try:
            producer.init()
            producer.begin()
            for i in range(count):
                producer.produce(topic, f"{tag}-{i}".encode(), str(i).encode())
            producer.commit()
        finally:
            producer.close()

    write("all-up", 100)
    # One node killed: two replicas of three stay in sync, as min.insync.replicas=2 asks.
    os.kill(cluster.services["kafka-3"].pid(), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while cluster.services["kafka-3"].pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    write("one-down", 100)
    cluster.start(["kafka-3"], echo=lambda line: None)
    values = sorted(r.value.decode() for r in read_topic(config, topic))
    assert values == sorted([f"all-up-{i}" for i in range(100)] + [f"one-down-{i}" for i in range(100)])
