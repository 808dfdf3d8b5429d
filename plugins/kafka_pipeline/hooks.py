"""Hooks: an Airflow connection in, a ready client out.

``kafka_default`` follows the Kafka provider's convention (librdkafka settings as the connection's
extra JSON); ``schema_registry_default`` holds the registry URL as its host (login and password,
when set, become basic auth); ``postgres_default`` (the Postgres provider's type) is the CTR store,
handed to include.ctr as its libpq URL.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.kafka.reachability import ClusterInfo, check_broker, check_registry
from include.kafka.registry import REQUEST_TIMEOUT_S


class KafkaClusterHook(KafkaBaseHook):
    """One Kafka connection, handing out admin, producer and consumer clients with overrides.

    The provider builds the connection's librdkafka settings (callbacks resolved, managed-cloud
    OAuth added) and hands them to ``_get_client``, the method its own hooks override to make
    their client; this hook's "client" is those settings, so ``get_conn`` returns them.
    """

    def _get_client(self, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """The connection's librdkafka settings with overrides (dots may be given as underscores)."""
        return {**self.get_conn, **overrides}

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())

    def producer(self, **overrides: Any) -> Producer:
        return Producer(self.client_config(**overrides))

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        return Consumer(self.client_config(**{"group.id": group_id, **overrides}))

    def ensure_reachable(self, timeout: float = 10.0) -> ClusterInfo:
        """:class:`ServiceUnreachable` (retriable), in one sentence, when the broker does not answer."""
        info = check_broker(self.client_config(), timeout, where=f"connection {self.kafka_config_id}")
        self.log.info("Kafka cluster %s answers: %d broker(s), %d topic(s)",
                      info.cluster_id, info.brokers, info.topics)
        return info


class SchemaRegistryHook(BaseHook):
    """A Confluent-API Schema Registry client from an Airflow connection."""

    conn_name_attr = "schema_registry_conn_id"
    default_conn_name = "schema_registry_default"
    conn_type = "http"
    hook_name = "Schema Registry"

    def __init__(self, schema_registry_conn_id: str = default_conn_name):
        super().__init__()
        self.schema_registry_conn_id = schema_registry_conn_id

    @cached_property
    def url(self) -> str:
        conn = self.get_connection(self.schema_registry_conn_id)
        host = conn.host or ""
        if "://" in host:
            return host.rstrip("/")
        scheme = conn.schema or "http"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host}{port}"

    def get_conn(self) -> SchemaRegistryClient:
        conn = self.get_connection(self.schema_registry_conn_id)
        # The project's request timeout unless the connection's extra sets one (see include.kafka.registry).
        config: dict[str, Any] = {"url": self.url, "timeout": REQUEST_TIMEOUT_S}
        if conn.login:
            config["basic.auth.user.info"] = f"{conn.login}:{conn.password or ''}"
        config.update(conn.extra_dejson or {})
        return SchemaRegistryClient(config)

    def ensure_reachable(self) -> list[str]:
        """:class:`ServiceUnreachable` (retriable), in one sentence, when the registry does not answer."""
        subjects = check_registry(self.get_conn(), self.url, where=f"connection {self.schema_registry_conn_id}")
        self.log.info("Schema Registry at %s answers: %d subject(s)", self.url, len(subjects))
        return subjects


def postgres_url(conn_id: str = "postgres_default") -> str | None:
    """The libpq URL of a Postgres connection (its extra, e.g. ``options``, as query parameters); None when undefined.

    include.ctr opens its own connections from a URL (include.ctr.store.connect) on the command
    line and in tasks alike; the provider's hook would open one of its own without a timeout.
    """
    try:
        return BaseHook.get_connection(conn_id).get_uri()
    except AirflowNotFoundException:
        return None
