"""The stack entry point itself, on a second, isolated Kafka with its own home and ports.

The jar cache is shared with the main stack, so these tests never fetch; they start a real broker
(and, for the metrics, a Pushgateway and a Prometheus of their own).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from devstack import Stack, StackError, StackSettings
from devstack.probes import free_ports, http_json, kafka_answers, port_in_use
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated(tmp_path, local_stack):
    """Settings for a stack of our own; local_stack makes sure the jar cache is filled."""
    ports = iter(free_ports(8))
    settings = StackSettings(
        home=tmp_path / "devstack", kafka_port=next(ports), kafka_controller_port=next(ports),
        registry_port=next(ports), registry_management_port=next(ports), s3_port=next(ports),
        kafka_metrics_port=next(ports), prometheus_port=next(ports), pushgateway_port=next(ports),
    )
    stack = Stack(settings)
    yield stack
    stack.stop()


def _cli(stack: Stack, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    s = stack.settings
    env = {**os.environ, "DEVSTACK_HOME": str(s.home), "KAFKA_PORT": str(s.kafka_port),
           "KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port), "S3_PORT": str(s.s3_port),
           "SCHEMA_REGISTRY_PORT": str(s.registry_port),
           "SCHEMA_REGISTRY_MANAGEMENT_PORT": str(s.registry_management_port),
           "KAFKA_METRICS_PORT": str(s.kafka_metrics_port), "PROMETHEUS_PORT": str(s.prometheus_port),
           "PUSHGATEWAY_PORT": str(s.pushgateway_port), **extra_env}
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_start_is_idempotent_status_tells_the_truth_and_stop_stops(isolated):
    lines: list[str] = []
    isolated.start(["kafka"], echo=lines.append)
    assert lines == ["  kafka: starting"]
    (status,) = isolated.status(["kafka"])
    assert status.state == "running" and status.pid
    assert kafka_answers(isolated.settings.kafka_port)

    began = time.monotonic()
    second = _cli(isolated, "start", "kafka")
    assert second.returncode == 0, second.stderr
    assert "kafka: already running" in second.stdout
    assert time.monotonic() - began < 20  # no fetch, no second broker
    (again,) = isolated.status(["kafka"])
    assert again.pid == status.pid

    listed = _cli(isolated, "status", "kafka")
    assert listed.returncode == 0 and "running" in listed.stdout
    assert str(isolated.settings.kafka_port) in listed.stdout and "kafka.log" in listed.stdout

    stopped = _cli(isolated, "stop", "kafka")
    assert stopped.returncode == 0 and "kafka: stopped" in stopped.stdout
    assert not port_in_use(isolated.settings.kafka_port)
    after = _cli(isolated, "status", "kafka")
    assert after.returncode == 1 and "stopped" in after.stdout
    assert isolated.status(["kafka"])[0].pid is None


def test_data_survives_a_restart(isolated):
    isolated.start(["kafka"], echo=lambda line: None)
    meta = (isolated.settings.home / "kafka" / "data" / "meta.properties").read_text()
    isolated.stop(["kafka"], echo=lambda line: None)
    isolated.start(["kafka"], echo=lambda line: None)
    # Storage is formatted once: the cluster id stays.
    assert (isolated.settings.home / "kafka" / "data" / "meta.properties").read_text() == meta


def test_port_taken_is_one_clear_sentence(isolated):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", isolated.settings.kafka_port))
        squatter.listen()
        result = _cli(isolated, "start", "kafka")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"devstack: port {isolated.settings.kafka_port} for kafka is already in use by a process "
        "devstack did not start; stop that process or choose another port (KAFKA_PORT)"
    ]
    assert "Traceback" not in result.stderr


def test_java_missing_is_one_clear_sentence(isolated, monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_JAVA_HOME", str(tmp_path / "no-jdk-here"))
    with pytest.raises(StackError, match=r"^Kafka needs Java 17 or newer but none was found"):
        isolated.start(["kafka"], echo=lambda line: None)


def test_unknown_service_is_refused(isolated):
    result = _cli(isolated, "start", "zookeeper")
    assert result.returncode == 1
    assert ("unknown service zookeeper; choose from kafka, schema-registry, s3, pushgateway, "
            "prometheus, postgres, redis") in result.stderr


def _query(prometheus: str, promql: str) -> dict[tuple, float]:
    """An instant PromQL query: {sorted label items without __name__: value}."""
    answer = http_json(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    if not answer or answer.get("status") != "success":
        return {}
    return {tuple(sorted((k, v) for k, v in row["metric"].items() if k != "__name__")):
            float(row["value"][1]) for row in answer["data"]["result"]}


def test_prometheus_sees_the_brokers_jmx_metrics_the_pushed_ones_and_the_alert_rules(isolated,
                                                                                    unique_name):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    isolated.start(["kafka", "pushgateway", "prometheus"], echo=lambda line: None)
    env = isolated.environment()
    prometheus, bootstrap = env["PROMETHEUS_URL"], env["KAFKA_BOOTSTRAP_SERVERS"]

    topic = unique_name("metrics")
    # The broker never auto-creates topics. (The client must outlive its futures.)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    for future in created.values():
        future.result(timeout=30)
    produced = 7
    delivered: list = []
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(produced):
        producer.produce(topic, value=f"record {i}".encode(),
                         on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0, "records still in the producer's queue after 30 s"
    assert delivered == [None] * produced
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("g"),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    consumed = 0
    deadline = time.monotonic() + 30
    while consumed < produced and time.monotonic() < deadline:
        message = consumer.poll(1)
        consumed += bool(message is not None and not message.error())
    consumer.close()
    assert consumed == produced

    registry = CollectorRegistry()
    Gauge("avazu_pipeline_check_ok", "1 when the check passed", ["check"],
          registry=registry).labels(check="devstack_test").set(1)
    push_to_gateway(urllib.parse.urlsplit(env["PUSHGATEWAY_URL"]).netloc, job="pipeline_health",
                    registry=registry)

    topic_messages = f'kafka_server_brokertopicmetrics_messagesin_total{{topic="{topic}"}}'
    wait_for(f"{topic_messages} == {produced}",
              lambda: list(_query(prometheus, topic_messages).values()) == [produced])
    # honor_labels: the pushed job label is kept, not replaced by the scrape's job="pushgateway".
    pushed = wait_for("the pushed gauge in Prometheus", lambda: _query(
        prometheus, 'avazu_pipeline_check_ok{job="pipeline_health", check="devstack_test"}'))
    assert list(pushed.values()) == [1.0]
    for name in ("kafka_server_brokertopicmetrics_bytesin_total",
                 "kafka_server_brokertopicmetrics_bytesout_total"):
        # A scrape from before the consumer's fetches has no bytes out yet.
        wait_for(f"{name} of the topic", lambda: _query(prometheus, f'{name}{{topic="{topic}"}} > 0'))
    for name, expected in (("kafka_server_replicamanager_underreplicatedpartitions", 0),
                           ("kafka_server_replicamanager_offlinereplicacount", 0),
                           ("kafka_controller_kafkacontroller_offlinepartitionscount", 0),
                           ("kafka_controller_kafkacontroller_activecontrollercount", 1)):
        assert list(_query(prometheus, name).values()) == [expected], name
    idle_fraction = "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent"
    idle = list(_query(prometheus, idle_fraction).values())
    assert len(idle) == 1 and 0 <= idle[0] <= 1

    groups = http_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    (group,) = [g for g in groups if g["name"] == "avazu-pipeline"]
    alerts = {rule["name"] for rule in group["rules"]}
    assert {"AvazuPipelineHealthStale", "AvazuDlqRatioHigh", "KafkaUnderReplicatedPartitions"} <= alerts
    assert all(rule["health"] == "ok" for rule in group["rules"])
    targets = http_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
    health = {target["labels"]["job"]: target["health"] for target in targets}
    assert health == {"kafka": "up", "pushgateway": "up", "prometheus": "up"}


def test_prometheus_missing_is_one_clear_sentence(isolated, tmp_path):
    # A PATH without Debian's binaries: what a machine without the package sees.
    result = _cli(isolated, "start", "prometheus", PATH=str(tmp_path / "empty-path"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "devstack: Prometheus is needed for the metric checks but prometheus is not installed (not on "
        "PATH); install Debian's package (apt-get install prometheus)"]
    assert not port_in_use(isolated.settings.prometheus_port)


def test_pushgateway_missing_is_one_clear_sentence_from_the_cli(isolated, tmp_path):
    result = _cli(isolated, "start", "pushgateway", PATH=str(tmp_path / "empty-path"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "devstack: Prometheus's Pushgateway is needed for the pipeline's pushed health metrics but "
        "prometheus-pushgateway is not installed (not on PATH); install Debian's package "
        "(apt-get install prometheus-pushgateway)"
    ]


def test_redis_answers_only_to_its_password_and_keeps_queued_messages_across_a_restart(tmp_path):
    import redis as redis_client

    from devstack.probes import redis_answers

    (port,) = free_ports(1)
    stack = Stack(StackSettings(home=tmp_path / "devstack", redis_port=port))
    service = stack.services["redis"]
    try:
        lines: list[str] = []
        stack.start(["redis"], echo=lines.append)
        assert lines == ["  redis: starting"]
        password = service.password_file.read_text().strip()
        assert redis_answers(port, password=password)
        assert not redis_answers(port) and not redis_answers(port, password="not-it")
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(port=port).ping()
        client = redis_client.Redis.from_url(service.url())
        client.lpush("queue", "task-1", "task-2")
        stack.stop(["redis"], echo=lambda line: None)
        assert not port_in_use(port)
        stack.start(["redis"], echo=lambda line: None)
        assert client.lrange("queue", 0, -1) == [b"task-2", b"task-1"]  # the append-only file kept them
        (status,) = stack.status(["redis"])
        assert status.state == "running" and status.endpoint == f"redis://127.0.0.1:{port}"
    finally:
        stack.stop(["redis"], echo=lambda line: None)
