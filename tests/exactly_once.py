"""The whole-topic check that an ingestion wrote every source row exactly once."""

from __future__ import annotations

from collections import Counter

from confluent_kafka.schema_registry import SchemaRegistryClient

from include.avazu.generator import GenerationTruth
from include.kafka.reader import read_topic
from include.kafka.registry import schema_fetcher
from include.kafka.wire import AvroDecoder


def assert_every_row_once(kafka_config: dict, registry: SchemaRegistryClient, raw: str, dlq: str,
                          good_ids: Counter, truth: GenerationTruth) -> None:
    """Every source row once in the committed topics (read_committed, whole): good ones in ``raw``,
    bad ones in ``dlq``; none lost, none twice."""
    decoder = AvroDecoder(schema_fetcher(registry))
    ids = Counter(decoder.decode(r.value)["id"] for r in read_topic(kafka_config, raw))
    lines = Counter(decoder.decode(r.value)["source"]["line"] for r in read_topic(kafka_config, dlq))
    # The file's own duplicate ids (a fault kind) arrive as often as they are in it: none twice more.
    assert ids == good_ids and lines == Counter(truth.bad_lines().keys())
    assert sum(ids.values()) + sum(lines.values()) == truth.rows  # none lost
