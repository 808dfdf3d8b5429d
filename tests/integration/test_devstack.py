"""The stack entry point itself, on a second, isolated Kafka with its own home and ports.

The jar cache is shared with the main stack, so these tests never fetch; they start a real broker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import Stack, StackError, StackSettings
from devstack.probes import kafka_answers, port_in_use

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated(tmp_path, local_stack):
    """Settings for a stack of our own; local_stack makes sure the jar cache is filled."""
    settings = StackSettings(
        home=tmp_path / "devstack", kafka_port=_free_port(), kafka_controller_port=_free_port(),
        registry_port=_free_port(), registry_management_port=_free_port(), s3_port=_free_port(),
    )
    stack = Stack(settings)
    yield stack
    stack.stop()


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    s = stack.settings
    env = {**os.environ, "DEVSTACK_HOME": str(s.home), "KAFKA_PORT": str(s.kafka_port),
           "KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port), "S3_PORT": str(s.s3_port),
           "SCHEMA_REGISTRY_PORT": str(s.registry_port),
           "SCHEMA_REGISTRY_MANAGEMENT_PORT": str(s.registry_management_port)}
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
    assert "unknown service zookeeper; choose from kafka, schema-registry, s3" in result.stderr
