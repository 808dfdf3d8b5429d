"""The smoke run: produce Avro records through the registry, read them back, compare.

It proves the broker, the registry and the wire format work together before any real pipeline
runs, and it counts everything it does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from include.errors import PermanentError
from include.kafka.reader import read_to_end
from include.kafka.registry import schema_fetcher
from include.kafka.wire import AvroDecoder, AvroEncoder, load_schema
from include.kafka_admin.topics import ensure_topics
from include.paths import SCHEMAS_DIR

log = logging.getLogger(__name__)

SCHEMA_PATH = SCHEMAS_DIR / "smoke_event.avsc"


class SmokeFailure(PermanentError):
    """The round trip lost, duplicated or changed records."""


@dataclass(frozen=True)
class SmokeResult:
    topic: str
    subject: str
    schema_id: int
    produced: int
    delivered: int
    consumed: int
    matched: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def smoke_records(run_id: str, count: int) -> list[dict[str, Any]]:
    """The records one smoke run writes: distinct, with a union field set on every other one."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return [
        {
            "seq": i,
            "run_id": run_id,
            "produced_at": now,
            "note": f"record {i}" if i % 2 == 0 else None,
        }
        for i in range(count)
    ]


def register_schema(registry: SchemaRegistryClient, subject: str) -> tuple[int, dict[str, Any]]:
    """Register the smoke schema under subject (idempotent) and return (id, schema)."""
    schema = load_schema(SCHEMA_PATH)
    schema_id = registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
    return schema_id, schema


def produce(producer: Producer, topic: str, encoder: AvroEncoder,
            records: list[dict[str, Any]], flush_timeout: float = 30.0) -> int:
    """Produce records keyed by seq and return how many the broker acknowledged."""
    failures: list[str] = []
    delivered = 0

    def on_delivery(error, message):
        nonlocal delivered
        if error is None:
            delivered += 1
        else:
            failures.append(str(error))

    for record in records:
        producer.produce(topic, key=str(record["seq"]).encode(), value=encoder.encode(record),
                         on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(flush_timeout)
    if remaining:
        raise SmokeFailure(f"{remaining} records were still unacknowledged after {flush_timeout:.0f} s")
    if failures:
        raise SmokeFailure(f"{len(failures)} records failed delivery, first: {failures[0]}")
    return delivered


def consume_all(consumer: Consumer, topic: str, decoder: AvroDecoder,
                timeout: float = 60.0) -> list[dict[str, Any]]:
    """Read every record the topic holds now and decode it (create the consumer with ``reader_config``)."""
    return [decoder.decode(message.value()) for message in read_to_end(consumer, [topic], timeout=timeout, batch=500)]


def run_roundtrip(admin: AdminClient, producer: Producer, consumer: Consumer,
                  registry: SchemaRegistryClient, topic: str, count: int = 1000,
                  run_id: str | None = None) -> SmokeResult:
    """Create topic, register schema, produce count records, read them back and compare."""
    began = time.monotonic()
    run_id = run_id or uuid.uuid4().hex
    subject = f"{topic}-value"
    created = bool(ensure_topics(admin, [topic], partitions=3))
    log.info("topic %s %s", topic, "created" if created else "already existed")
    schema_id, schema = register_schema(registry, subject)
    log.info("schema registered under %s with id %d", subject, schema_id)

    records = smoke_records(run_id, count)
    delivered = produce(producer, topic, AvroEncoder(schema, schema_id), records)
    log.info("produced %d records, %d acknowledged", len(records), delivered)

    decoder = AvroDecoder(schema_fetcher(registry))
    # The topic may hold earlier runs' records; this run's are told apart by run_id.
    seen = [r for r in consume_all(consumer, topic, decoder) if r["run_id"] == run_id]
    by_seq = {r["seq"]: r for r in seen}
    matched = sum(1 for r in records if by_seq.get(r["seq"]) == r)
    result = SmokeResult(topic, subject, schema_id, len(records), delivered, len(seen), matched,
                         round(time.monotonic() - began, 3))
    log.info("smoke result: %s", result.as_dict())
    if not (result.produced == result.delivered == result.consumed == result.matched):
        raise SmokeFailure(
            f"round trip on {topic} is not exact: produced {result.produced}, delivered "
            f"{result.delivered}, read back {result.consumed}, equal to what was sent {result.matched}"
        )
    return result
