"""The schema ids of the three topics an ingestion writes, and sandbox copies of those topics.

In production the topics come from include/config/topics.yaml through the kafka_provisioning DAG;
the ingestion only looks its schemas up and fails with one sentence when they are missing. Tests,
benchmarks and one-off runs want the same topics under other names: :func:`provision_ingest_topics`
declares them exactly like the production ones (partitions, configs, schemas, compatibility) and
provisions them with the same code the DAG uses.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.errors import PermanentError
from include.ingest.config import IngestTopics
from include.kafka.reachability import ServiceUnreachable
from include.kafka_admin.catalog import TopicCatalog, load_catalog
from include.kafka_admin.subjects import SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, register_subjects, subject_specs
from include.kafka_admin.topics import apply_plans, plan_topics

# The declared topics whose layout a sandbox copies.
DECLARED = IngestTopics().as_dict()


class SchemaNotRegistered(PermanentError):
    """A topic's value schema is not registered (as the ingestion's schema file) under its subject."""


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
        raise ServiceUnreachable(f"the Schema Registry failed to look up {subject}: {error}") from None


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
