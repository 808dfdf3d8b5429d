"""Sandbox copies of the three topics an ingestion writes.

In production the topics come from include/config/topics.yaml through the kafka_provisioning DAG;
the ingestion only looks its schemas up (:func:`include.kafka.registry.lookup_schema_id`) and
fails with one sentence when they are missing. Tests, benchmarks and one-off runs want the same
topics under other names: :func:`provision_ingest_topics` declares them exactly like the
production ones (partitions, configs, schemas, compatibility) and provisions them with the same
code the DAG uses.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.ingest.config import IngestTopics
from include.kafka_admin.sandbox import provision_sandbox


def provision_ingest_topics(admin: AdminClient, registry: SchemaRegistryClient, topics: IngestTopics) -> dict[str, Any]:
    """Create ``topics`` (when missing) and register their schemas, as kafka_provisioning would."""
    return provision_sandbox(admin, registry, topics.as_dict())
