"""Copies of declared topics under other names, provisioned like the real ones (tests, benchmarks, one-off runs).

A copy has the declared topic's partitions, configs, value schema and compatibility level, and is
created and registered by the same code the kafka_provisioning DAG runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from include.kafka_admin.acls import apply_acls, plan_acls
from include.kafka_admin.catalog import TopicCatalog, load_catalog
from include.kafka_admin.subjects import register_subjects, subject_specs
from include.kafka_admin.topics import apply_plans, plan_topics


def sandbox_catalog(copies: dict[str, str], catalog: TopicCatalog | None = None) -> TopicCatalog:
    """A catalog declaring each ``copies`` value (``{role: name}``) exactly like the declared topic of that role."""
    catalog = catalog or load_catalog()
    specs = [dataclasses.replace(catalog.spec_for(role), name=name) for role, name in copies.items()]
    return TopicCatalog(catalog.source, tuple(specs), catalog.access)


def provision_sandbox(admin: AdminClient, registry: SchemaRegistryClient, copies: dict[str, str]) -> dict[str, Any]:
    """Create copies of declared topics (``{role: copy}``), grant the pipeline principal its ACLs on
    them (on a cluster with an authorizer; ``admin`` must be the admin principal's) and register
    their schemas, as kafka_provisioning would. Other ACLs of the principal are left as they are."""
    catalog = sandbox_catalog(copies)
    outcomes = apply_plans(admin, catalog, plan_topics(admin, catalog), fix_drift=False, grow_partitions=False, dry_run=False)
    acls = apply_acls(admin, plan_acls(admin, catalog), fix_drift=False, dry_run=False)
    subjects = register_subjects(registry, subject_specs(catalog))
    return {"topics": [o.as_dict() for o in outcomes], "acls": [a.as_dict() for a in acls],
            "subjects": [s.as_dict() for s in subjects]}
