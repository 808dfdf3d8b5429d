"""The three topics an ingestion writes, their schema ids, sandbox copies of them, and reading them back.

In production the topics come from include/config/topics.yaml through the kafka_provisioning DAG;
the ingestion only looks its schemas up and fails with one sentence when they are missing. Tests,
benchmarks and one-off runs want the same topics under other names: :func:`provision_ingest_topics`
declares them exactly like the production ones (partitions, configs, schemas, compatibility) and
provisions them with the same code the DAG uses.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.kafka_admin.catalog import TopicCatalog, load_catalog
from include.kafka_admin.subjects import SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, register_subjects, subject_specs
from include.kafka_admin.topics import apply_plans, plan_topics
from include.topic_scan import scan_topic

# The declared topics whose layout a sandbox copies.
DECLARED = {"raw": "ad_events_raw", "dlq": "ad_events_error", "checkpoints": "ingest_checkpoints"}


class SchemaNotRegistered(RuntimeError):
    """A topic's value schema is not registered (as the ingestion's schema file) under its subject."""


@dataclass(frozen=True)
class IngestTopics:
    """Where the rows, the dead letters and the checkpoints go."""

    raw: str = DECLARED["raw"]
    dlq: str = DECLARED["dlq"]
    checkpoints: str = DECLARED["checkpoints"]

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SchemaIds:
    """Registered schema ids of the three value subjects."""

    raw: int
    dlq: int
    checkpoints: int


def lookup_schema_id(registry: SchemaRegistryClient, subject: str, schema: dict[str, Any]) -> int:
    """The id under which ``schema`` is registered in ``subject``; the error says what to run if none."""
    try:
        return registry.lookup_schema(subject, Schema(json.dumps(schema, separators=(",", ":")), "AVRO")).schema_id
    except SchemaRegistryError as error:
        if error.error_code in (SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND):
            raise SchemaNotRegistered(
                f"subject {subject} does not hold this version of the {schema.get('name')} schema "
                f"({'no such subject' if error.error_code == SUBJECT_NOT_FOUND else 'schema not registered'}); "
                "run the kafka_provisioning DAG to register it") from None
        raise


def sandbox_catalog(topics: IngestTopics, catalog: TopicCatalog | None = None) -> TopicCatalog:
    """A catalog declaring ``topics`` exactly like the production raw, DLQ and checkpoint topics."""
    catalog = catalog or load_catalog()
    specs = [dataclasses.replace(catalog[DECLARED[role]], name=getattr(topics, role)) for role in ("raw", "dlq", "checkpoints")]
    return TopicCatalog(catalog.source, tuple(specs))


def provision_ingest_topics(admin: AdminClient, registry: SchemaRegistryClient, topics: IngestTopics) -> dict[str, Any]:
    """Create ``topics`` (when missing) and register their schemas, as kafka_provisioning would."""
    catalog = sandbox_catalog(topics)
    outcomes = apply_plans(admin, catalog, plan_topics(admin, catalog), fix_drift=False, grow_partitions=False, dry_run=False)
    subjects = register_subjects(registry, subject_specs(catalog))
    return {"topics": [o.as_dict() for o in outcomes], "subjects": [s.as_dict() for s in subjects]}


@dataclass(frozen=True)
class StoredRecord:
    """One record as a consumer sees it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_whole_topic(kafka_config: dict[str, Any], topic: str, *, committed_only: bool = True,
                     timeout: float = 120.0) -> list[StoredRecord]:
    """Every record a consumer sees in ``topic`` now, partition by partition (for checks and reports).

    ``committed_only`` reads as ``read_committed`` (what downstream consumers see); otherwise
    records of aborted transactions are included too.
    """
    consumer = Consumer({
        **kafka_config,
        "group.id": f"read-whole-topic-{uuid.uuid4().hex}",
        "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })
    try:
        return [StoredRecord(message.partition(), message.offset(), message.key(), message.value(),
                             tuple(message.headers() or ()))
                for message in scan_topic(consumer, topic, timeout, batch=10_000)]
    finally:
        consumer.close()
