"""An unreachable broker or registry gives one clear sentence, tried against real closed ports."""

from __future__ import annotations

import json
import socket
import time

import pytest

from include.kafka.reachability import ServiceUnreachable, check_broker, check_registry
from include.kafka.registry import registry_client


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_broker_not_reachable(closed_port):
    began = time.monotonic()
    with pytest.raises(ServiceUnreachable) as info:
        check_broker({"bootstrap.servers": f"127.0.0.1:{closed_port}"}, timeout=2, where="test")
    message = str(info.value)
    assert f"Kafka at 127.0.0.1:{closed_port} (test) did not answer within 2 s" in message
    assert "make stack-start" in message and "\n" not in message
    assert time.monotonic() - began < 15


def test_registry_not_reachable(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(ServiceUnreachable) as info:
        check_registry(registry_client(url, **{"max.retries": 0}), url)
    assert f"the Schema Registry at {url} did not answer" in str(info.value)
    assert "\n" not in str(info.value)


def test_hooks_say_unreachable_in_one_retriable_sentence(closed_port, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from kafka_pipeline.failures import task_failure
    from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook

    monkeypatch.setenv("AIRFLOW_CONN_BROKEN_KAFKA", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": f"127.0.0.1:{closed_port}"}}))
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN_REGISTRY", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{closed_port}/apis/ccompat/v7",
         "extra": {"max.retries": 0}}))
    with pytest.raises(ServiceUnreachable, match="connection broken_kafka") as kafka:
        KafkaClusterHook("broken_kafka").ensure_reachable(timeout=2)
    with pytest.raises(ServiceUnreachable, match="connection broken_registry\\) did not answer"):
        SchemaRegistryHook("broken_registry").ensure_reachable()
    # The task fails this try with the sentence, and Airflow's retries try again.
    failure = task_failure(kafka.value)
    assert type(failure) is AirflowException and not isinstance(failure, AirflowFailException)
    assert str(failure) == str(kafka.value)
