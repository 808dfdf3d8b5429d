"""Fail fast, in one sentence, when the broker or the registry does not answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.errors import RetriableError

log = logging.getLogger(__name__)


class ServiceUnreachable(RetriableError):
    """The broker or registry did not answer; the message says which, where and what to do."""


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    brokers: int
    topics: int


def check_broker(config: dict[str, Any], timeout: float = 10.0, where: str = "") -> ClusterInfo:
    """Ask the cluster for its metadata; raise ServiceUnreachable when it does not answer.

    ``where`` names the source of the config (e.g. the Airflow connection) for the message.
    """
    servers = config.get("bootstrap.servers", "?")
    # librdkafka would print every refused connection to stderr; one sentence is enough.
    quiet = {**config, "logger": logging.getLogger("librdkafka.reachability"), "log_level": 0}
    try:
        metadata = AdminClient(quiet).list_topics(timeout=timeout)
    except KafkaException as error:
        source = f" ({where})" if where else ""
        raise ServiceUnreachable(
            f"Kafka at {servers}{source} did not answer within {timeout:.0f} s ({error.args[0].str()}): "
            "is the broker running? `make stack-start` starts the local one"
        ) from None
    return ClusterInfo(metadata.cluster_id, len(metadata.brokers), len(metadata.topics))


def check_registry(client: SchemaRegistryClient, url: str, where: str = "") -> list[str]:
    """List the registry's subjects; raise ServiceUnreachable when it does not answer."""
    source = f" ({where})" if where else ""
    try:
        return client.get_subjects()
    except SchemaRegistryError as error:
        raise ServiceUnreachable(
            f"the Schema Registry at {url}{source} answered with an error: {error}"
        ) from None
    except Exception as error:  # httpx raises its own connection errors; they all mean the same here
        raise ServiceUnreachable(
            f"the Schema Registry at {url}{source} did not answer ({type(error).__name__}: "
            f"{error}): is it running? `make stack-start` starts the local one"
        ) from None
