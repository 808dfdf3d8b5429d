"""Schema ids from a Confluent-API Schema Registry, with the project's one-sentence failures."""

from __future__ import annotations

import json
from typing import Any, Callable

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.errors import PermanentError
from include.kafka.reachability import ServiceUnreachable
from include.kafka.wire import WireFormatError

# Seconds one registry request may take. The client's own default is to wait forever, and a
# response lost on the way would hang a task; a timeout is retried by the client like any
# transport error, then ends as ServiceUnreachable.
REQUEST_TIMEOUT_S = 30


def registry_client(url: str, **settings: Any) -> SchemaRegistryClient:
    """A Schema Registry client for ``url`` with the project's request timeout (``settings`` override)."""
    return SchemaRegistryClient({"url": url, "timeout": REQUEST_TIMEOUT_S, **settings})


# The registry's error codes for a subject it does not have, and a schema a subject does not hold.
SUBJECT_NOT_FOUND = 40401
SCHEMA_NOT_FOUND = 40403


class SchemaNotRegistered(PermanentError):
    """A topic's value schema is not registered (as the ingestion's schema file) under its subject."""


# Subjects asked for per request: Apicurio's Confluent API answers at most 1,000 however many
# are asked for (limit=-1 included), so a registry with more is read page by page.
SUBJECTS_PAGE = 1000


def list_subjects(registry: SchemaRegistryClient, page: int = SUBJECTS_PAGE) -> list[str]:
    """Every subject the registry holds, read ``page`` at a time."""
    subjects: list[str] = []
    while True:
        batch = registry.get_subjects(offset=len(subjects), limit=page)
        subjects.extend(batch)
        if len(batch) < page:
            return subjects


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
    except Exception as error:  # httpx's transport errors: the registry did not answer at all
        raise ServiceUnreachable(f"the Schema Registry did not answer when asked for {subject} "
                                 f"({type(error).__name__}: {error})") from None


class UnknownSchemaId(WireFormatError):
    """A wire-format payload names a schema id the registry does not hold: it cannot be read, ever."""


def schema_fetcher(registry: SchemaRegistryClient) -> Callable[[int], str]:
    """The schema (JSON text) of an id, for :class:`include.kafka.wire.AvroDecoder`.

    An id the registry does not hold is :class:`UnknownSchemaId`, a permanent finding about the
    payload (a reader parks or counts it, never retries it); a registry that fails or does not answer
    is :class:`ServiceUnreachable`, which a retry may get past.
    """
    def fetch(schema_id: int) -> str:
        try:
            return registry.get_schema(schema_id).schema_str
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                raise UnknownSchemaId(f"schema id {schema_id} is not in the Schema Registry (HTTP 404)") from None
            raise ServiceUnreachable(f"the Schema Registry failed to return schema id {schema_id}: {error}") from None
        except Exception as error:  # httpx's transport errors: the registry did not answer at all
            raise ServiceUnreachable(f"the Schema Registry did not answer when asked for schema id {schema_id} "
                                     f"({type(error).__name__}: {error})") from None

    return fetch
