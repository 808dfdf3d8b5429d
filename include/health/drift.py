"""The cluster against its declarations: topic configs (the provisioning plan) and registry subjects.

Topic drift is what kafka_provisioning would change: the same plan (include.kafka_admin.topics),
read only. Registry drift is a subject that is missing, whose latest version is not the schema in
``schemas/`` (someone registered another one by hand), or whose compatibility level differs from
the declared one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from confluent_kafka.schema_registry.error import SchemaRegistryError

from include.health.outcome import CheckOutcome, Metric, first_problems
from include.kafka.registry import list_subjects
from include.kafka_admin.subjects import subject_specs
from include.kafka_admin.topics import plan_topics

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

_TOPIC_COLUMNS = ["topic", "partitions", "replication", "drift"]
_SUBJECT_COLUMNS = ["subject", "schema_file", "latest_version", "declared_version", "compatibility", "drift"]


def check_topic_drift(inputs: HealthInputs) -> CheckOutcome:
    catalog = inputs.catalog
    rows, problems = [], []
    for plan in plan_topics(inputs.admin, catalog):
        if not plan.exists:
            drift = "missing"
        else:
            parts = [f"{name} is {actual!s}, declared {declared}" for name, (actual, declared) in sorted(plan.config_drift.items())]
            if plan.partitions_to_add:
                parts.append(f"{plan.actual_partitions} partitions, declared {plan.declared_partitions}")
            if plan.actual_partitions is not None and plan.declared_partitions < plan.actual_partitions:
                parts.append(f"{plan.actual_partitions} partitions, more than the {plan.declared_partitions} declared")
            if plan.replication_drift:
                parts.append(f"replication factor {plan.actual_replication_factor}, declared {plan.replication_factor}")
            drift = "; ".join(parts)
        if drift:
            problems.append(f"{plan.topic}: {drift}")
        rows.append({"topic": plan.topic, "partitions": plan.actual_partitions if plan.exists else "-",
                     "replication": plan.actual_replication_factor if plan.exists else "-", "drift": drift or "none"})
    metrics = [Metric("topics_drifted", float(len(problems)), help="Declared topics that differ from the cluster")]
    if problems:
        return CheckOutcome("topic_drift", False, f"{len(problems)} of {len(rows)} declared topic(s) differ from "
                            f"{catalog.source.name}: {first_problems(problems)}; run kafka_provisioning with "
                            "fix_drift (configs) or grow_partitions, or change the declaration", _TOPIC_COLUMNS, rows, metrics)
    return CheckOutcome("topic_drift", True, f"all {len(rows)} declared topics match {catalog.source.name}",
                        _TOPIC_COLUMNS, rows, metrics)


def check_registry_drift(inputs: HealthInputs) -> CheckOutcome:
    client = inputs.registry
    existing = set(list_subjects(client))
    rows, problems = [], []
    for spec in subject_specs(inputs.catalog):
        row = {"subject": spec.subject, "schema_file": spec.schema_path.name, "latest_version": "-",
               "declared_version": "-", "compatibility": "-", "drift": "none"}
        rows.append(row)
        if spec.subject not in existing:
            row["drift"] = "missing"
            problems.append(f"subject {spec.subject} is not registered")
            continue
        latest = client.get_latest_version(spec.subject)
        row["latest_version"] = latest.version
        try:
            declared = client.lookup_schema(spec.subject, spec.schema())
            row["declared_version"] = declared.version
        except SchemaRegistryError:
            declared = None
        level = _compatibility(client, spec.subject)
        row["compatibility"] = level or "(global)"
        drift = []
        if declared is None:
            drift.append(f"no version is {spec.schema_path.name}")
        elif declared.version != latest.version:
            fields = _field_names(latest.schema.schema_str) - _field_names(spec.schema().schema_str)
            extra = f" (it adds {', '.join(sorted(fields))})" if fields else ""
            drift.append(f"latest version {latest.version} is not {spec.schema_path.name} (version "
                         f"{declared.version}){extra}")
        if level != spec.compatibility:
            drift.append(f"compatibility {level or 'the global default'}, declared {spec.compatibility}")
        if drift:
            row["drift"] = "; ".join(drift)
            problems.append(f"subject {spec.subject}: {row['drift']}")
    metrics = [Metric("subjects_drifted", float(len(problems)), help="Declared subjects that differ from the registry")]
    if problems:
        return CheckOutcome("registry_drift", False, f"{len(problems)} of {len(rows)} subject(s) differ from schemas/: "
                            f"{first_problems(problems)}; a version registered by hand wins over the file for every "
                            "new producer - delete it or commit it to schemas/ and run kafka_provisioning",
                            _SUBJECT_COLUMNS, rows, metrics)
    return CheckOutcome("registry_drift", True, f"all {len(rows)} subjects' latest versions and levels match schemas/",
                        _SUBJECT_COLUMNS, rows, metrics)


def _compatibility(client, subject: str) -> str | None:
    try:
        return client.get_compatibility(subject)
    except SchemaRegistryError:
        return None


def _field_names(schema_str: str) -> set[str]:
    schema = json.loads(schema_str)
    return {f["name"] for f in schema.get("fields", [])} if isinstance(schema, dict) else set()
