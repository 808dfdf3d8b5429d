"""include/config/ingest.yaml: read once, checked with one-sentence errors, overridden by DAG params."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.ingest.config import (
    DEFAULT_CONFIG_PATH,
    IngestConfig,
    IngestConfigError,
    RowCodec,
    load_ingest_config,
    parse_ingest_config,
)
from include.ingest.hours import Mode
from include.kafka_admin.catalog import load_catalog, parse_catalog


def _document(**changes) -> dict:
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for dotted, value in changes.items():
        target = document
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return document


def test_the_shipped_config_is_valid_and_writes_to_the_declared_topics_of_its_roles():
    config, catalog = load_ingest_config(), load_catalog()
    assert (config.raw_topic, config.dlq_topic, config.checkpoint_topic) == (
        catalog.topic_for("raw"), catalog.topic_for("dlq"), catalog.topic_for("checkpoints"))
    assert config.mode is Mode.AUTO and config.chunk_rows >= 1
    assert config.producer["compression.type"] in {"lz4", "zstd"}
    assert config.row_codec is RowCodec.AUTO
    assert parse_ingest_config(_document(row_codec="arrow"), "ingest.yaml").row_codec is RowCodec.ARROW


@pytest.mark.parametrize(("changes", "message"), [
    ({"mode": "sometimes"}, "mode must be one of auto, backfill, replay"),
    ({"chunk_rows": 0}, "chunk_rows must be a whole number 1..2000000"),
    ({"chunk_rows": "100"}, "chunk_rows must be a whole number"),
    ({"producer": {"acks": "1"}}, "acks are set by the ingestion itself"),
    ({"producer": {"transactional.id": "x"}}, "transactional.id are set by the ingestion itself"),
    ({"replay__wrap": "yes"}, "replay.wrap must be true or false"),
    ({"partition_wait__timeout_s": -1}, "partition_wait.timeout_s must be a number of seconds"),
    ({"transaction__timeout_ms": 5}, "transaction.timeout_ms must be a whole number 1000..900000"),
    ({"row_codec": "fortran"}, "row_codec must be one of auto, native, arrow, not 'fortran'"),
])
def test_bad_values_are_named(changes, message):
    with pytest.raises(IngestConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_ingest_config(_document(**changes), "ingest.yaml")


def test_unknown_keys_are_named_with_a_suggestion():
    document = _document()
    document["chunk_row"] = 5
    with pytest.raises(IngestConfigError, match=r"ingest.yaml: unknown key 'chunk_row' \(did you mean 'chunk_rows'\?\)"):
        parse_ingest_config(document, "ingest.yaml")


def test_topic_names_in_the_ingestion_settings_are_refused_the_catalog_has_them():
    with pytest.raises(IngestConfigError, match="ingest.yaml: topics: the ingestion writes to the topics with roles "
                                                "raw, dlq and checkpoints in include/config/topics.yaml"):
        parse_ingest_config({**_document(), "topics": {"raw": "clicks"}}, "ingest.yaml")


def test_a_catalog_without_an_ingestion_role_is_one_sentence(tmp_path: Path):
    catalog = parse_catalog({"topics": [{"name": "clicks", "role": "raw", "partitions": 1}]}, tmp_path / "topics.yaml")
    with pytest.raises(IngestConfigError, match="ingest.yaml: .*topics.yaml declares no topic with role 'dlq'"):
        parse_ingest_config(_document(), "ingest.yaml", catalog)


def test_topics_that_are_not_valid_or_not_three_are_named():
    config = load_ingest_config()
    with pytest.raises(IngestConfigError, match="raw_topic 'bad topic' is not a valid Kafka topic name"):
        config.with_overrides({"raw_topic": "bad topic"})
    with pytest.raises(IngestConfigError, match="must be three different topics"):
        config.with_overrides({"dlq_topic": config.raw_topic})


def test_missing_keys_are_named():
    document = _document()
    del document["staging_uri"]
    with pytest.raises(IngestConfigError, match="staging_uri is missing"):
        parse_ingest_config(document, "ingest.yaml")


def test_a_missing_or_broken_file_is_one_sentence(tmp_path: Path):
    with pytest.raises(IngestConfigError, match="does not exist"):
        load_ingest_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mode: [unclosed")
    with pytest.raises(IngestConfigError, match="is not valid YAML"):
        load_ingest_config(broken)


def test_params_override_and_are_checked_again():
    config = load_ingest_config()
    assert config.with_overrides({}) is config
    assert config.with_overrides({"chunk_rows": None, "raw_topic": ""}) is config
    changed = config.with_overrides({"chunk_rows": 500, "raw_topic": "sandbox_raw", "mode": "replay", "partition_wait_s": 3})
    assert (changed.chunk_rows, changed.raw_topic, changed.mode, changed.partition_wait_timeout_s) == (500, "sandbox_raw", Mode.REPLAY, 3.0)
    with pytest.raises(IngestConfigError, match="with params chunk_rows: chunk_rows must be"):
        config.with_overrides({"chunk_rows": -1})


def test_round_trips_through_the_xcom_form():
    config = load_ingest_config().with_overrides({"mode": "backfill"})
    assert IngestConfig.from_dict(config.as_dict()) == config
