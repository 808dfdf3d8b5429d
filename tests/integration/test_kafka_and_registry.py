"""The real broker and registry: topics, produce/consume, schemas by id, the wire format both ways."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from include.kafka.wire import AvroDecoder, AvroEncoder
from include.kafka.registry import list_subjects, schema_fetcher
from include.kafka_admin.topics import ensure_topics
from include.kafka.smoke import SCHEMA_PATH, consume_all, run_roundtrip

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "record", "name": "Click", "namespace": "io.adpipeline.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "click", "type": "int"},
        {"name": "site", "type": ["null", "string"], "default": None},
    ],
}


def _consumer(kafka_config, group):
    return Consumer({**kafka_config, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.partition.eof": True})


def test_create_topic_then_produce_and_consume_in_key_order(kafka_config, unique_name):
    topic = unique_name("topic")
    admin = AdminClient(kafka_config)
    assert ensure_topics(admin, [topic], partitions=3) == [topic]
    assert ensure_topics(admin, [topic], partitions=3) == []  # second call is a no-op
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3

    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    sent = [(f"device-{i % 7}", f"event-{i}") for i in range(300)]
    for key, value in sent:
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0

    consumer = _consumer(kafka_config, unique_name("group"))
    consumer.subscribe([topic])
    got, ends = [], set()
    while len(ends) < 3:
        message = consumer.poll(10)
        assert message is not None, "timed out reading the topic back"
        if message.error():
            ends.add(message.partition())
            continue
        got.append((message.key().decode(), message.value().decode(), message.partition()))
    consumer.close()

    assert sorted((k, v) for k, v, _ in got) == sorted(sent)
    # One key lands in one partition, in the order it was produced.
    for key in {k for k, _ in sent}:
        partitions = {p for k, _, p in got if k == key}
        assert len(partitions) == 1
        assert [v for k, v, _ in got if k == key] == [v for k, v in sent if k == key]


def test_register_schema_and_read_it_back_by_id(registry_client, unique_name):
    subject = f"{unique_name('subject')}-value"
    schema_id = registry_client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    assert json.loads(registry_client.get_schema(schema_id).schema_str) == SCHEMA
    latest = registry_client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (1, schema_id)
    # Registering the same schema again returns the same id and adds no version.
    assert registry_client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO")) == schema_id
    assert registry_client.get_versions(subject) == [1]
    assert subject in list_subjects(registry_client)


def test_every_subject_is_listed_page_by_page(registry_client, unique_name):
    # Apicurio's Confluent API lists 1,000 subjects at most per request (limit=-1 too).
    mine = {f"{unique_name('paged')}-{i}-value" for i in range(3)}
    for subject in mine:
        registry_client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    everything = list_subjects(registry_client)
    assert mine <= set(everything) and len(everything) == len(set(everything))
    paged = list_subjects(registry_client, page=2)
    assert len(paged) == len(everything) and set(paged) == set(everything)  # each once, none left out


def test_registry_compatibility_endpoints(registry_client, unique_name):
    subject = f"{unique_name('subject')}-value"
    registry_client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    registry_client.set_compatibility(subject, "BACKWARD")
    assert registry_client.get_compatibility(subject) == "BACKWARD"

    with_default = {**SCHEMA, "fields": SCHEMA["fields"] + [
        {"name": "banner_pos", "type": "int", "default": 0}]}
    without_default = {**SCHEMA, "fields": SCHEMA["fields"] + [
        {"name": "banner_pos", "type": "int"}]}
    assert registry_client.test_compatibility(subject, Schema(json.dumps(with_default), "AVRO"))
    assert not registry_client.test_compatibility(subject, Schema(json.dumps(without_default), "AVRO"))


def test_wire_format_is_compatible_with_confluent_serdes(kafka_config, registry_client, unique_name):
    topic = unique_name("wire")
    ensure_topics(AdminClient(kafka_config), [topic], partitions=1)
    subject = f"{topic}-value"
    schema_id = registry_client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    ctx = SerializationContext(topic, MessageField.VALUE)
    confluent_ser = AvroSerializer(registry_client, json.dumps(SCHEMA),
                                   conf={"auto.register.schemas": False, "use.latest.version": True})
    confluent_de = AvroDeserializer(registry_client)
    ours_enc = AvroEncoder(SCHEMA, schema_id)
    ours_dec = AvroDecoder(schema_fetcher(registry_client))

    records = [{"id": str(18446744073709551615 - i), "click": i % 2, "site": None if i % 3 else "1fbe01fe"}
               for i in range(20)]
    producer = Producer(kafka_config)
    for i, record in enumerate(records):
        value = ours_enc.encode(record) if i % 2 == 0 else confluent_ser(record, ctx)
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0

    # Through the broker: a mix of both writers comes back through our decoder unchanged.
    consumer = Consumer({**kafka_config, "group.id": unique_name("g"), "enable.partition.eof": True})
    try:
        assert consume_all(consumer, topic, ours_dec) == records
    finally:
        consumer.close()
    # And each writer's bytes are read by the other implementation.
    for record in records:
        assert confluent_de(ours_enc.encode(record), ctx) == record
        assert ours_dec.decode(confluent_ser(record, ctx)) == record


def test_smoke_round_trip_counts_are_exact(kafka_config, registry_client, unique_name):
    topic = unique_name("smoke")
    admin = AdminClient(kafka_config)
    producer = Producer({**kafka_config, "acks": "all", "enable.idempotence": True})
    consumer = Consumer({**kafka_config, "group.id": unique_name("g"), "enable.partition.eof": True})
    try:
        first = run_roundtrip(admin, producer, consumer, registry_client, topic, count=250)
        # A second run on the same topic reads past the first run's records and counts only its own.
        second = run_roundtrip(admin, producer, consumer, registry_client, topic, count=100)
    finally:
        consumer.close()
    assert (first.produced, first.delivered, first.consumed, first.matched) == (250,) * 4
    assert (second.produced, second.delivered, second.consumed, second.matched) == (100,) * 4
    assert first.schema_id == second.schema_id
    assert SCHEMA_PATH.exists()
