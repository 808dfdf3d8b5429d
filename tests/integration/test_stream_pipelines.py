"""The seed 004 and seed 003 pipelines on the real broker and registry, processor in-process."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from include.kafka.wire import AvroDecoder
from include.kafka.registry import schema_fetcher
from include.streaming import StreamProcessor, TransformContext
from include.streaming.analytics import DLQ_NOTICE, InvalidEvent, analytics_transform
from include.dead_letters import read_dead_letter_headers
from include.kafka.reader import READER_SETTINGS, read_to_end
from include.streaming.simulators import (
    SIMULATOR_PRODUCER_SETTINGS,
    publish,
    purchase_events,
    web_events,
    word_events,
)
from include.streaming.topics import ensure_topics
from include.streaming.words import SEED_WORDS, uppercase_transform

pytestmark = pytest.mark.integration

EXTRA_WORDS = ["airflow", "avro", "partition", "offset", "broker", "consumer", "producer",
               "transaction", "schema", "registry", "lag", "retention", "replica", "leader"]


def _read(kafka_config, topic, unique_name, isolation="read_committed"):
    consumer = Consumer({**kafka_config, **READER_SETTINGS,
                         "group.id": unique_name("reader"), "isolation.level": isolation})
    try:
        return list(read_to_end(consumer, [topic], from_committed=True, timeout=30))
    finally:
        consumer.close()


def test_seed004_good_events_become_analytics_and_bad_ones_go_to_the_dlq_unchanged(
        kafka_config, registry_client, unique_name, caplog):
    name = unique_name("s4")
    web, purchase, analytics, dlq = (f"{name}_{t}" for t in ("web", "purchase", "analytics", "dlq"))
    ensure_topics(AdminClient(kafka_config), [web, purchase, analytics, dlq], partitions=3)
    sent = {web: list(web_events(150, seed=21, bad_ratio=0.15)),
            purchase: list(purchase_events(120, seed=21, bad_ratio=0.15))}
    producer = Producer({**kafka_config, **SIMULATOR_PRODUCER_SETTINGS})
    for topic, events in sent.items():
        publish(producer, topic, events)
    bad = [e for events in sent.values() for e in events if e.fault]
    good_ids = {e.value for events in sent.values() for e in events if not e.fault}
    assert 0 < len(bad) < 270

    transform = analytics_transform(TransformContext([web, purchase], analytics, dlq, registry_client),
                                    web_topic=web, purchase_topic=purchase)
    processor = StreamProcessor("analytics", transform, kafka_config, [web, purchase], analytics,
                                group_id=unique_name("g"), dlq_topic=dlq, dead_letter_notice=DLQ_NOTICE)
    with caplog.at_level(logging.INFO, logger="include.streaming"):
        counts = processor.run(max_runtime=60, idle_timeout=2)

    assert (counts.records_in, counts.records_out, counts.dead_lettered, counts.skipped) == \
        (270, 270 - len(bad), len(bad), 0)
    assert counts.stop_reason == "idle_timeout" and counts.aborted_transactions == 0
    notice = DLQ_NOTICE.replace("{dlq_topic}", dlq)
    assert sum(1 for r in caplog.records if r.getMessage() == notice) == len(bad)

    decoder = AvroDecoder(schema_fetcher(registry_client))
    events = [decoder.decode(m.value()) for m in _read(kafka_config, analytics, unique_name)]
    assert len(events) == 270 - len(bad)
    origins = {(e["source_topic"], e["source_partition"], e["source_offset"]) for e in events}
    assert len(origins) == len(events)
    assert Counter(e["source"] for e in events) == {
        "WEB": sum(1 for e in sent[web] if not e.fault),
        "PURCHASE": sum(1 for e in sent[purchase] if not e.fault)}
    assert registry_client.get_latest_version(f"{analytics}-value").schema_id == \
        transform.encoder.schema_id

    # The DLQ holds the bad inputs byte for byte, keys included, with why and where in headers.
    inputs = {(m.topic(), m.partition(), m.offset()): m.value()
              for topic in (web, purchase) for m in _read(kafka_config, topic, unique_name)}
    dead = _read(kafka_config, dlq, unique_name)
    assert Counter(m.value() for m in dead) == Counter(e.value for e in bad)
    assert Counter(m.key() for m in dead) == Counter(e.key for e in bad)
    assert not good_ids & {m.value() for m in dead}
    error_classes = {cls.__name__ for cls in InvalidEvent.__subclasses__()}
    for message in dead:
        why = read_dead_letter_headers(message.headers())
        assert why["error.class"] in error_classes and why["error.message"]
        assert why["processor"] == "analytics"
        origin = (why["source.topic"], int(why["source.partition"]), int(why["source.offset"]))
        assert inputs[origin] == message.value()


@pytest.mark.parametrize("partitions", [1, 3])
def test_seed003_words_come_out_upper_cased_in_order_per_partition(
        kafka_config, unique_name, partitions):
    name = unique_name("s3")
    source, target = f"{name}_input", f"{name}_output"
    ensure_topics(AdminClient(kafka_config), [source, target], partitions=partitions)
    words = list(SEED_WORDS) + (EXTRA_WORDS if partitions > 1 else [])
    publish(Producer({**kafka_config, **SIMULATOR_PRODUCER_SETTINGS}), source, word_events(words))

    processor = StreamProcessor("uppercase", uppercase_transform(TransformContext([source], target)),
                                kafka_config, [source], target, group_id=unique_name("g"))
    counts = processor.run(max_runtime=60, idle_timeout=2)
    assert (counts.records_in, counts.records_out) == (len(words), len(words))

    def by_partition(messages):
        grouped: dict[int, list[str]] = {}
        for message in messages:
            grouped.setdefault(message.partition(), []).append(message.value().decode())
        return grouped

    went_in = by_partition(_read(kafka_config, source, unique_name))
    came_out = by_partition(_read(kafka_config, target, unique_name))
    assert came_out == {p: [w.upper() for w in ws] for p, ws in went_in.items()}
    if partitions == 1:
        # The seed's own run: one partition, its five words in its order.
        assert came_out == {0: ["HELLO", "WORLD", "KAFKA", "STREAMING", "DATA"]}
