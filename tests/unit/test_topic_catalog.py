"""The topic declarations: the shipped file loads, and every kind of mistake is one clear sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from include.avazu.contract import avro_schema
from include.kafka_admin.catalog import DEFAULT_DECLARATIONS, SCHEMAS_DIR, DeclarationError, load_catalog
from include.kafka_admin.subjects import subject_specs

SEED_TOPICS = {"ad_events_raw", "ad_events_error", "ad_events_retry"}
STREAM_TOPICS = {"web-events", "purchase-events", "analytics-events", "analytics-dlq", "input-topic", "output-topic"}


def test_shipped_declarations_hold_the_seed_and_stream_topics():
    catalog = load_catalog()
    names = set(catalog.names())
    assert SEED_TOPICS | STREAM_TOPICS <= names
    raw = catalog["ad_events_raw"]
    assert raw.partitions == 3 and raw.value_schema.name == "ad_event.avsc"
    assert catalog["ad_events_error"].configs["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert catalog["ingest_checkpoints"].configs["cleanup.policy"] == "compact"
    # Defaults apply where a topic says nothing.
    assert all(t.configs["min.insync.replicas"] == "2" for t in catalog.topics)
    assert "ad_events_raw-value" in {s.subject for s in subject_specs(catalog)}


def test_ad_event_schema_file_is_the_row_contract():
    assert json.loads((SCHEMAS_DIR / "ad_event.avsc").read_text()) == avro_schema()


def _write(tmp_path: Path, document) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def _one_topic(**overrides):
    topic = {"name": "clicks", "role": "clicks", "partitions": 3, "configs": {"retention.ms": 1000}}
    topic.update(overrides)
    return {"topics": [topic]}


@pytest.mark.parametrize("document, message", [
    (_one_topic(partitionz=3), "topic clicks: unknown key 'partitionz' (did you mean 'partitions'?)"),
    (_one_topic(partitions=0), "topic clicks: partitions must be a whole number of at least 1, not 0"),
    (_one_topic(configs={"retention.msec": 5}),
     "topic clicks: unknown Kafka topic config 'retention.msec' (did you mean 'retention.ms'?)"),
    (_one_topic(configs={"priority.processor": "true"}), "unknown Kafka topic config 'priority.processor'"),
    (_one_topic(configs={"cleanup.policy": "archive"}), "cleanup.policy must be one of"),
    (_one_topic(configs={"retention.ms": "a week"}), "retention.ms must be a whole number"),
    (_one_topic(value_schema="nowhere.avsc"), "topic clicks: value_schema: schema file"),
    (_one_topic(compatibility="BACKWARDS"), "compatibility must be one of"),
    ({"topics": [{"name": "a", "role": "a", "partitions": 1}, {"name": "a", "role": "b", "partitions": 1}]},
     "topic a: declared twice"),
    ({"topics": [{"name": "a", "role": "a", "partitions": 1}, {"name": "b", "role": "a", "partitions": 1}]},
     "topic b: role 'a' is already topic a's"),
    (_one_topic(role=None), "topic clicks: role must be a lower-case identifier (what code calls the topic), not None"),
    (_one_topic(role="Web-Events"), "role must be a lower-case identifier"),
    ({"topic": []}, "unknown key 'topic' (did you mean 'topics'?)"),
    ({"topics": [{"partitions": 1}]}, "topic #1 has no name"),
    ({"topics": [{"name": "b", "role": "b"}]}, "topic b: partitions is missing"),
])
def test_bad_declarations_fail_with_one_sentence(tmp_path, document, message):
    with pytest.raises(DeclarationError) as info:
        load_catalog(_write(tmp_path, document))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_avro_names_the_file(tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "broken.avsc").write_text('{"type": "record", "name": "B", "fields": [{"name": "x"}]}')
    with pytest.raises(DeclarationError, match=r"topic clicks: value_schema: schema file .*broken.avsc is not valid Avro"):
        load_catalog(_write(tmp_path, _one_topic(value_schema="broken.avsc")), schemas_dir=schemas)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(DeclarationError, match="is not valid YAML"):
        load_catalog(_write(tmp_path, "topics: [unclosed"))
    with pytest.raises(DeclarationError, match="does not exist"):
        load_catalog(tmp_path / "absent.yaml")


def test_default_declarations_path_is_in_the_project():
    assert DEFAULT_DECLARATIONS.is_file()


def test_min_insync_replicas_is_capped_to_the_replication_a_cluster_gives():
    from include.kafka_admin.topics import capped_configs

    raw = load_catalog().spec_for("raw")
    assert capped_configs(raw, 3)["min.insync.replicas"] == "2"
    assert capped_configs(raw, 1)["min.insync.replicas"] == "1"
    assert capped_configs(raw, 1)["retention.ms"] == raw.configs["retention.ms"]
    assert raw.configs["min.insync.replicas"] == "2"  # the declaration itself is left as it is


def test_every_declared_topic_has_a_role_and_code_asks_for_the_name_by_role():
    from include.kafka_admin.catalog import declared_catalog, topic_for

    catalog = load_catalog()
    assert len({t.role for t in catalog.topics}) == len(catalog.topics)
    assert all(catalog.topic_for(t.role) == t.name and topic_for(t.role) == t.name for t in catalog.topics)
    assert declared_catalog() is declared_catalog()  # read once per process


@pytest.mark.parametrize("role, message", [
    ("raww", "declares no topic with role 'raww' (did you mean 'raw'?); roles: raw, "),
    ("clicks", "declares no topic with role 'clicks'; roles: raw, "),
])
def test_an_unknown_role_is_one_sentence(role, message):
    with pytest.raises(DeclarationError, match=r"topics.yaml " + message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_catalog().topic_for(role)


def test_a_name_given_as_a_role_says_whose_name_it_is():
    catalog = load_catalog()
    name = catalog.topic_for("raw")
    with pytest.raises(DeclarationError, match=f"{name!r} is the name of role 'raw': name topics by role"):
        catalog.topic_for(name)
