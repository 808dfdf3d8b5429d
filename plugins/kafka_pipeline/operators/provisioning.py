"""Operators that bring Kafka topics and Schema Registry subjects in line with the declarations.

Each is a thin shell: connection -> client (hooks), declarations -> catalog (include), one call,
a result table in the log and in XCom. A wrong declaration or an incompatible schema fails the
task without retries (retrying cannot fix it); an unreachable service fails it with retries
(``kafka_pipeline.failures``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from confluent_kafka.admin import AdminClient
from airflow.sdk.exceptions import AirflowFailException

from include.kafka_admin.acls import apply_acls, drift_text, plan_acls
from include.kafka_admin.catalog import DEFAULT_DECLARATIONS, load_catalog
from include.kafka_admin.subjects import register_subjects, subject_specs
from include.kafka_admin.topics import apply_plans, format_table, plan_topics, verify_topics
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook
from kafka_pipeline.params import as_bool

TOPIC_COLUMNS = ["topic", "action", "partitions", "details"]


def _reachable_admin(kafka_config_id: str) -> AdminClient:
    """An admin client of the connection, once its cluster answers (retriable error otherwise)."""
    hook = KafkaClusterHook(kafka_config_id)
    hook.ensure_reachable()
    return hook.admin()
ACL_COLUMNS = ["acl", "action"]
SUBJECT_COLUMNS = ["subject", "action", "version", "schema_id", "compatibility", "schema_file"]


class ProvisionTopicsOperator(BaseOperator):
    """Create missing topics; report drift; fix config drift and grow partitions when asked.

    :param declarations: path of the topics YAML (templated)
    :param dry_run: only plan and report (templated)
    :param fix_drift: set drifted configs back to the declared values (incremental alter)
    :param grow_partitions: add partitions where fewer exist than declared (never removes any)
    """

    template_fields: Sequence[str] = ("declarations", "dry_run", "fix_drift", "grow_partitions")
    ui_color = "#e8f1fb"

    def __init__(self, *, declarations: str = str(DEFAULT_DECLARATIONS), dry_run: Any = False,
                 fix_drift: Any = True, grow_partitions: Any = False,
                 kafka_config_id: str = KafkaClusterHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.declarations = declarations
        self.dry_run = dry_run
        self.fix_drift = fix_drift
        self.grow_partitions = grow_partitions
        self.kafka_config_id = kafka_config_id

    @fails_cleanly
    def execute(self, context) -> list[dict]:
        catalog = load_catalog(self.declarations)
        admin = _reachable_admin(self.kafka_config_id)
        outcomes = apply_plans(admin, catalog, plan_topics(admin, catalog),
                               fix_drift=as_bool(self.fix_drift),
                               grow_partitions=as_bool(self.grow_partitions),
                               dry_run=as_bool(self.dry_run))
        rows = [o.as_dict() for o in outcomes]
        self.log.info("Topics%s:\n%s", " (dry run)" if as_bool(self.dry_run) else "",
                      format_table(rows, TOPIC_COLUMNS))
        return rows


class ProvisionAclsOperator(BaseOperator):
    """Give the catalog's principal the ACLs derived from the catalog (include.kafka_admin.acls);
    report ACLs of that principal the catalog does not derive, and remove them when fixing drift.
    On a cluster without an authorizer it reports that and changes nothing.

    :param dry_run: only plan and report (templated)
    :param fix_drift: remove the principal's ACLs the catalog does not derive (templated)
    """

    template_fields: Sequence[str] = ("declarations", "dry_run", "fix_drift")
    ui_color = "#fbeee8"

    def __init__(self, *, declarations: str = str(DEFAULT_DECLARATIONS), dry_run: Any = False,
                 fix_drift: Any = True, kafka_config_id: str = KafkaClusterHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.declarations = declarations
        self.dry_run = dry_run
        self.fix_drift = fix_drift
        self.kafka_config_id = kafka_config_id

    @fails_cleanly
    def execute(self, context) -> list[dict]:
        catalog = load_catalog(self.declarations)
        admin = _reachable_admin(self.kafka_config_id)
        outcomes = apply_acls(admin, plan_acls(admin, catalog), fix_drift=as_bool(self.fix_drift),
                              dry_run=as_bool(self.dry_run))
        rows = [o.as_dict() for o in outcomes]
        self.log.info("ACLs of User:%s%s:\n%s", catalog.access.principal,
                      " (dry run)" if as_bool(self.dry_run) else "", format_table(rows, ACL_COLUMNS))
        return rows


class RegisterSchemasOperator(BaseOperator):
    """Set each subject's compatibility level, check the schema against it, then register.

    Every subject is checked before any is registered: an incompatible schema fails the task
    with the subject, the level and the reason, and registers nothing.
    """

    template_fields: Sequence[str] = ("declarations", "dry_run")
    ui_color = "#eef7ea"

    def __init__(self, *, declarations: str = str(DEFAULT_DECLARATIONS), dry_run: Any = False,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.declarations = declarations
        self.dry_run = dry_run
        self.schema_registry_conn_id = schema_registry_conn_id

    @fails_cleanly
    def execute(self, context) -> list[dict]:
        catalog = load_catalog(self.declarations)
        hook = SchemaRegistryHook(self.schema_registry_conn_id)
        hook.ensure_reachable()
        outcomes = register_subjects(hook.get_conn(), subject_specs(catalog), dry_run=as_bool(self.dry_run))
        rows = [o.as_dict() for o in outcomes]
        self.log.info("Subjects%s:\n%s", " (dry run)" if as_bool(self.dry_run) else "",
                      format_table(rows, SUBJECT_COLUMNS))
        return rows


class VerifyProvisioningOperator(BaseOperator):
    """Describe every topic, subject and ACL again and fail, naming each, where any differs."""

    template_fields: Sequence[str] = ("declarations",)

    def __init__(self, *, declarations: str = str(DEFAULT_DECLARATIONS),
                 kafka_config_id: str = KafkaClusterHook.default_conn_name,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.declarations = declarations
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id

    @fails_cleanly
    def execute(self, context) -> dict:
        catalog = load_catalog(self.declarations)
        admin = _reachable_admin(self.kafka_config_id)
        plans = verify_topics(admin, catalog)
        acls = plan_acls(admin, catalog)
        if not acls.in_sync:
            raise AirflowFailException(drift_text(acls))
        registry = SchemaRegistryHook(self.schema_registry_conn_id)
        # A dry run's "would-register" rows must not pass verification: check for "unchanged" only.
        outcomes = register_subjects(registry.get_conn(), subject_specs(catalog), dry_run=True)
        missing = [o.subject for o in outcomes if o.action != "unchanged"]
        if missing:
            raise AirflowFailException(
                f"{len(missing)} subject(s) do not hold the declared schema as a registered version: "
                f"{', '.join(missing)}")
        summary = {"topics": len(plans), "subjects": len(outcomes), "acls": len(acls.present),
                   "partitions": sum(p.actual_partitions or 0 for p in plans)}
        self.log.info("Verified against %s: %s", catalog.source.name, summary)
        return summary
