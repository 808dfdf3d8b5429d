"""The pipeline principal's ACLs as the catalog derives them, and the catalog's access section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.kafka_admin.acls import Acl, AclPlan, apply_acls, declared_acls, drift_text
from include.kafka_admin.catalog import DeclarationError, load_catalog
from include.kafka_admin.sandbox import sandbox_catalog


def test_every_declared_topic_gets_read_write_describe_and_describe_configs_and_nothing_more():
    catalog = load_catalog()
    acls = declared_acls(catalog)
    topic_acls = {a for a in acls if a.resource == "topic"}
    assert {a.name for a in topic_acls} == set(catalog.names())
    assert {a.operation for a in topic_acls} == {"READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"}
    assert all(a.pattern == "literal" for a in topic_acls)
    # Never the operations that change the cluster: those are the admin principal's.
    assert not {a.operation for a in acls} & {"CREATE", "DELETE", "ALTER", "ALTER_CONFIGS", "ALL", "CLUSTER_ACTION"}
    assert Acl("transactional_id", "avazu-ingest/", "prefixed", "WRITE") in acls
    assert Acl("group", "dlq-reprocessing", "prefixed", "READ") in acls
    assert catalog.access.principal == "pipeline"


def test_the_ids_the_pipeline_uses_are_covered_by_a_declared_prefix():
    from include.dlq.config import load_dlq_config
    from include.ingest.checkpoint import transactional_id

    access = load_catalog().access
    covered = lambda name, prefixes: any(name.startswith(p) for p in prefixes)  # noqa: E731
    tid = transactional_id("ad_events_raw", "abc", 14102100)
    assert covered(tid, access.transactional_id_prefixes)
    assert covered(f"{tid}/checkpoint-reader", access.group_prefixes)
    for spec in load_dlq_config().dlqs:
        assert covered(spec.group_id, access.group_prefixes), spec.group_id
        assert covered(spec.transactional_id, access.transactional_id_prefixes), spec.transactional_id


def test_the_flink_ctr_jobs_consumer_groups_are_covered_by_a_declared_prefix():
    import inspect

    from kafka_pipeline.operators.flink import CtrStreamOperator

    access = load_catalog().access
    default = inspect.signature(CtrStreamOperator).parameters["group_id"].default
    # The job's sources commit as <group_id>.hourly and <group_id>.minute.
    assert all(access.covers_group(f"{default}.{source}") for source in ("hourly", "minute"))
    assert not access.covers_group("ctr_flink_other")


def test_a_sandbox_catalog_derives_the_acls_of_its_copies():
    catalog = sandbox_catalog({"raw": "raw_copy_1"})
    assert {a.name for a in declared_acls(catalog) if a.resource == "topic"} == {"raw_copy_1"}


@pytest.mark.parametrize("access, message", [
    ({"principal": "pipe line"}, "principal must be a user name"),
    ({"group_prefixes": "stream-"}, "group_prefixes must be a list of non-empty prefixes"),
    ({"transactional_id_prefixes": [""]}, "transactional_id_prefixes must be a list"),
    ({"groups": ["x"]}, "unknown key 'groups'"),
])
def test_a_wrong_access_section_is_one_sentence(tmp_path: Path, access, message):
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump({"access": access, "topics": [{"name": "t", "role": "t", "partitions": 1}]}))
    with pytest.raises(DeclarationError, match=message):
        load_catalog(path)


def test_without_an_authorizer_nothing_is_applied_and_drift_is_named():
    assert apply_acls(None, AclPlan("pipeline", authorizer=False), fix_drift=True, dry_run=False)[0].action.startswith(
        "skipped: the cluster has no authorizer")
    read = Acl("topic", "x", "literal", "READ")
    alter = Acl("topic", "x", "literal", "ALTER_CONFIGS")
    plan = AclPlan("pipeline", True, missing=frozenset({read}), extra=frozenset({alter}))
    assert not plan.in_sync
    assert drift_text(plan) == ("the ACLs of User:pipeline differ from the catalog's: missing READ on topic x; "
                                "not declared ALTER_CONFIGS on topic x")
    rows = apply_acls(None, plan, fix_drift=False, dry_run=True)
    assert [(r.acl, r.action) for r in rows] == [("READ on topic x", "would-create"), ("ALTER_CONFIGS on topic x", "extra")]
