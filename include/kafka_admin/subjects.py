"""Register the declared schemas: compatibility level first, a compatibility check, then register.

All subjects are checked before any is registered, so an incompatible schema registers nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.errors import PermanentError
from include.kafka.registry import SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, list_subjects
from include.kafka_admin.catalog import TopicCatalog

log = logging.getLogger(__name__)

NO_SUBJECT_CONFIG = 40408


class IncompatibleSchema(PermanentError):
    """A schema change the subject's compatibility level does not allow."""


@dataclass(frozen=True)
class SubjectSpec:
    subject: str
    schema_path: Path
    compatibility: str

    def schema(self) -> Schema:
        # Registered compact, so the same file always gives the same registered text.
        return Schema(json.dumps(json.loads(self.schema_path.read_text()), separators=(",", ":")), "AVRO")


@dataclass
class SubjectOutcome:
    """One row of the result table a registration run returns."""

    subject: str
    action: str  # registered | unchanged | would-register | checked
    compatibility: str
    version: int | None = None
    schema_id: int | None = None
    schema_file: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def subject_specs(catalog: TopicCatalog) -> list[SubjectSpec]:
    """Every subject the declarations imply (TopicNameStrategy: <topic>-value, <topic>-key)."""
    return [SubjectSpec(subject, path, topic.compatibility)
            for topic in catalog.topics for subject, path in topic.subjects().items()]


def _field_changes(old: dict, new: dict) -> list[str]:
    """A person-readable account of record field changes, for when the registry gives no reason."""
    if old.get("type") != "record" or new.get("type") != "record":
        return [f"type {old.get('type')} -> {new.get('type')}"] if old.get("type") != new.get("type") else []
    before = {f["name"]: f for f in old.get("fields", [])}
    after = {f["name"]: f for f in new.get("fields", [])}
    changes = []
    for name in after.keys() - before.keys():
        changes.append(f"field {name!r} added" + ("" if "default" in after[name] else " without a default"))
    for name in before.keys() - after.keys():
        changes.append(f"field {name!r} removed" + ("" if "default" in before[name] else " (it had no default)"))
    for name in before.keys() & after.keys():
        if before[name].get("type") != after[name].get("type"):
            changes.append(f"field {name!r} type {json.dumps(before[name]['type'])} -> {json.dumps(after[name]['type'])}")
    return sorted(changes)


def _registry_reason(client: SchemaRegistryClient, spec: SubjectSpec, schema: Schema) -> str:
    """The registry's own explanation (verbose check), or our field diff when it gives none."""
    try:
        # The client's test_compatibility drops the messages, so ask the REST endpoint directly.
        answer = client._rest_client.post(
            f"compatibility/subjects/{spec.subject}/versions/latest?verbose=true", body=schema.to_dict())
        messages = answer.get("messages") or []
    except SchemaRegistryError:
        messages = []
    if messages:
        return "; ".join(map(str, messages))
    latest = json.loads(client.get_latest_version(spec.subject).schema.schema_str)
    changes = _field_changes(latest, json.loads(schema.schema_str))
    return ", ".join(changes) if changes else "the registry gave no detail"


def _current_level(client: SchemaRegistryClient, subject: str) -> str | None:
    try:
        return client.get_compatibility(subject)
    except SchemaRegistryError as error:
        if error.error_code in (NO_SUBJECT_CONFIG, SUBJECT_NOT_FOUND):
            return None
        raise


def register_subjects(client: SchemaRegistryClient, specs: list[SubjectSpec], *,
                      dry_run: bool = False) -> list[SubjectOutcome]:
    """Check every subject, then (unless dry_run) set levels and register what is new.

    Raises IncompatibleSchema naming the subject, the level and the reason; nothing is
    registered in that case.
    """
    pending: list[tuple[SubjectSpec, Schema]] = []
    outcomes: dict[str, SubjectOutcome] = {}
    existing = set(list_subjects(client))
    for spec in specs:
        schema = spec.schema()
        if spec.subject in existing:
            try:
                found = client.lookup_schema(spec.subject, schema)
                outcomes[spec.subject] = SubjectOutcome(spec.subject, "unchanged", spec.compatibility,
                                                        found.version, found.schema_id, spec.schema_path.name)
                continue
            except SchemaRegistryError as error:
                if error.error_code not in (SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND):
                    raise
            # The check runs under the declared level (a dry run checks under the current one).
            if not dry_run and _current_level(client, spec.subject) != spec.compatibility:
                client.set_compatibility(spec.subject, spec.compatibility)
            if not client.test_compatibility(spec.subject, schema):
                raise IncompatibleSchema(
                    f"schema {spec.schema_path.name} is not {spec.compatibility}-compatible with the latest "
                    f"version of subject {spec.subject}: {_registry_reason(client, spec, schema)}; "
                    "nothing was registered")
        pending.append((spec, schema))
        outcomes[spec.subject] = SubjectOutcome(spec.subject, "would-register", spec.compatibility,
                                                schema_file=spec.schema_path.name)

    if dry_run:
        return [outcomes[s.subject] for s in specs]

    for spec, schema in pending:
        client.register_schema(spec.subject, schema)
        # A new subject gets its level once it exists (the first version needs no check).
        if _current_level(client, spec.subject) != spec.compatibility:
            client.set_compatibility(spec.subject, spec.compatibility)
        # The register call answers with the id only; the lookup gives the version too.
        registered = client.lookup_schema(spec.subject, schema)
        outcomes[spec.subject] = SubjectOutcome(spec.subject, "registered", spec.compatibility,
                                                registered.version, registered.schema_id, spec.schema_path.name)
        log.info("registered %s version %s (id %s) from %s", spec.subject, registered.version,
                 registered.schema_id, spec.schema_path.name)
    return [outcomes[s.subject] for s in specs]
