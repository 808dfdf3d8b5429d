"""Provisioning on the real broker and registry, each test with topics and subjects of its own."""

from __future__ import annotations

import json
import logging
import time

import pytest
import yaml
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from include.kafka_admin.catalog import load_catalog
from include.kafka_admin.subjects import IncompatibleSchema, register_subjects, subject_specs
from include.kafka_admin.topics import ProvisioningError, apply_plans, plan_topics, verify_topics

pytestmark = pytest.mark.integration

EVENT = {"type": "record", "name": "Event", "namespace": "io.adpipeline.test",
         "fields": [{"name": "id", "type": "string"}, {"name": "click", "type": "int"}]}


@pytest.fixture
def declare(tmp_path, unique_name):
    """Write a declarations file for topics named after this test; returns (write, names)."""
    names = {"events": unique_name("events"), "dlq": unique_name("dlq")}
    (tmp_path / "event.avsc").write_text(json.dumps(EVENT))

    def write(events_partitions=3, events_configs=None, schema=None):
        if schema is not None:
            (tmp_path / "event.avsc").write_text(json.dumps(schema))
        document = {
            "defaults": {"replication_factor": 3, "configs": {"min.insync.replicas": 2}},
            "topics": [
                {"name": names["events"], "role": "events", "partitions": events_partitions,
                 "configs": events_configs or {"retention.ms": 86400000, "compression.type": "producer",
                                               "cleanup.policy": "delete"},
                 "value_schema": "event.avsc"},
                {"name": names["dlq"], "role": "dlq", "partitions": 1,
                 "configs": {"retention.ms": 604800000, "compression.type": "gzip"}},
            ],
        }
        path = tmp_path / "topics.yaml"
        path.write_text(yaml.safe_dump(document))
        return load_catalog(path, schemas_dir=tmp_path)

    return write, names


def _apply(admin, catalog, **flags):
    options = {"fix_drift": False, "grow_partitions": False, "dry_run": False, **flags}
    return {o.topic: o for o in apply_plans(admin, catalog, plan_topics(admin, catalog), **options)}


def _configs(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result().items()}


def _eventually(condition, timeout=15.0):
    """A change made by hand reaches the broker's metadata a moment after the call returns."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the change never showed"
        time.sleep(0.2)


def test_created_as_declared_then_unchanged(kafka_config, declare, caplog):
    write, names = declare
    admin = AdminClient(kafka_config)
    catalog = write()
    with caplog.at_level(logging.WARNING):
        first = _apply(admin, catalog)
    assert {t: o.action for t, o in first.items()} == {names["events"]: "created", names["dlq"]: "created"}
    assert "declares replication factor 3 but the cluster has 1 broker(s): using 1" in caplog.text
    # Two in sync of one replica could never be: capped like the replication, and no drift after.
    assert "declares min.insync.replicas 2 but has 1 replica(s): using 1" in caplog.text

    topics = admin.list_topics(timeout=10).topics
    assert len(topics[names["events"]].partitions) == 3 and len(topics[names["dlq"]].partitions) == 1
    configs = _configs(admin, names["dlq"])
    assert (configs["retention.ms"], configs["compression.type"], configs["min.insync.replicas"]) == (
        "604800000", "gzip", "1")

    second = _apply(admin, catalog, fix_drift=True, grow_partitions=True)
    assert {o.action for o in second.values()} == {"unchanged"}
    assert len(verify_topics(admin, catalog)) == 2


def test_dry_run_changes_nothing(kafka_config, declare):
    write, names = declare
    admin = AdminClient(kafka_config)
    outcome = _apply(admin, write(), dry_run=True)
    assert {o.action for o in outcome.values()} == {"would-create"}
    assert names["events"] not in admin.list_topics(timeout=10).topics


def test_config_changed_by_hand_is_reported_then_fixed(kafka_config, declare):
    write, names = declare
    admin = AdminClient(kafka_config)
    catalog = write()
    _apply(admin, catalog)
    resource = ConfigResource(ResourceType.TOPIC, names["events"], incremental_configs=[
        ConfigEntry("retention.ms", "1234", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result()
    _eventually(lambda: _configs(admin, names["events"])["retention.ms"] == "1234")

    (plan,) = [p for p in plan_topics(admin, catalog) if p.topic == names["events"]]
    assert plan.config_drift == {"retention.ms": ("1234", "86400000")}
    reported = _apply(admin, catalog, fix_drift=False)[names["events"]]
    assert reported.action == "drift-left" and "retention.ms: 1234 -> 86400000" in reported.details
    with pytest.raises(ProvisioningError, match=f"{names['events']}: retention.ms: 1234 -> 86400000"):
        verify_topics(admin, catalog)

    fixed = _apply(admin, catalog, fix_drift=True)[names["events"]]
    assert fixed.action == "altered"
    assert _configs(admin, names["events"])["retention.ms"] == "86400000"
    verify_topics(admin, catalog)


def test_partitions_grow_when_asked_and_a_shrink_is_refused(kafka_config, declare):
    write, names = declare
    admin = AdminClient(kafka_config)
    _apply(admin, write(events_partitions=2))

    grown_catalog = write(events_partitions=4)
    assert _apply(admin, grown_catalog)[names["events"]].action == "drift-left"
    grown = _apply(admin, grown_catalog, grow_partitions=True)[names["events"]]
    assert (grown.action, grown.partitions) == ("grown", "2->4")
    assert len(admin.list_topics(timeout=10).topics[names["events"]].partitions) == 4

    # A shrink fails the whole run before anything changes, even the other topic's drift.
    resource = ConfigResource(ResourceType.TOPIC, names["dlq"], incremental_configs=[
        ConfigEntry("retention.ms", "999", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result()
    _eventually(lambda: _configs(admin, names["dlq"])["retention.ms"] == "999")
    with pytest.raises(ProvisioningError) as info:
        _apply(admin, write(events_partitions=1), fix_drift=True)
    assert f"{names['events']} declares 1 but has 4" in str(info.value)
    assert "nothing was changed" in str(info.value)
    assert len(admin.list_topics(timeout=10).topics[names["events"]].partitions) == 4
    assert _configs(admin, names["dlq"])["retention.ms"] == "999"


def test_schemas_register_once_refuse_incompatible_and_accept_compatible(registry_client, declare):
    write, names = declare
    subject = f"{names['events']}-value"

    first = register_subjects(registry_client, subject_specs(write()))
    assert [(o.subject, o.action, o.version) for o in first] == [(subject, "registered", 1)]
    assert registry_client.get_compatibility(subject) == "BACKWARD"
    again = register_subjects(registry_client, subject_specs(write()))
    assert [(o.action, o.version, o.schema_id) for o in again] == [("unchanged", 1, first[0].schema_id)]

    breaking = {**EVENT, "fields": EVENT["fields"] + [{"name": "banner_pos", "type": "int"}]}
    with pytest.raises(IncompatibleSchema) as info:
        register_subjects(registry_client, subject_specs(write(schema=breaking)))
    message = str(info.value)
    assert subject in message and "BACKWARD" in message and "nothing was registered" in message
    assert "'banner_pos' added without a default" in message or "banner_pos" in message
    assert registry_client.get_versions(subject) == [1]

    evolving = {**EVENT, "fields": EVENT["fields"] + [{"name": "banner_pos", "type": "int", "default": 0}]}
    dry = register_subjects(registry_client, subject_specs(write(schema=evolving)), dry_run=True)
    assert [o.action for o in dry] == ["would-register"] and registry_client.get_versions(subject) == [1]
    second = register_subjects(registry_client, subject_specs(write(schema=evolving)))
    assert [(o.action, o.version) for o in second] == [("registered", 2)]
    assert json.loads(registry_client.get_version(subject, 2).schema.schema_str) == evolving
