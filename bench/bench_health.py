"""Benchmark pipeline_health's reconciliation: counting an ingested day's records per hour in Kafka.

    . scripts/local-env.sh && .venv/bin/python bench/bench_health.py [--rows 1000000] [--hours 4]

It generates an Avazu-format file, ingests every hour into sandbox topics with the real ingestion,
then, against the local broker, in the same run:

* ``reconciliation`` - the check itself (include.health.hours.check_reconciliation): reads the raw
  topic and the DLQ read_committed a batch at a time (include.kafka.reader.read_batches_to_end) and
  counts records per hour and generation, the C codec stepping over each raw record's fields
  before ``hour`` for a whole batch (avazu_rowcodec.int_field_counts);
* ``one at a time`` - the same read, each record's hour read in Python (include.kafka.wire.int_field_reader:
  what the check does where the C codec is not installed);
* ``projection`` - the same read, decoding each raw record with fastavro and a reader schema that
  keeps only ``hour`` (what the check falls back to for a layout it cannot step over);
* ``read only`` - the same read with no decoding at all: the ceiling.

Figures are raw records per second; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=4)
    args = parser.parse_args()

    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from include.avazu.generator import GeneratorSpec, generate
    from include.health.checks import HealthInputs
    from include.health.config import load_health_config
    from include.health.hours import _HOUR_ONLY, HourReader, check_reconciliation
    from include.ingest.config import IngestTopics, load_ingest_config
    from include.ingest.ingestor import HourlyIngestor
    from include.ingest.staging import find_partition, stage_source
    from include.ingest.topics import provision_ingest_topics
    from include.kafka.reader import read_batches_to_end, reader_config
    from include.kafka.registry import registry_client, schema_fetcher
    from include.kafka.wire import AvroDecoder
    from include.kafka_admin.sandbox import sandbox_catalog

    kafka = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}
    registry = registry_client(os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"))
    work = Path(tempfile.mkdtemp(prefix="bench-health-"))
    generate(GeneratorSpec(args.rows, hours=args.hours, seed=3), work / "train.csv")
    stage_source(str(work / "train.csv"), str(work / "staging"))
    suffix = uuid.uuid4().hex[:8]
    topics = IngestTopics(f"bench_health_raw_{suffix}", f"bench_health_dlq_{suffix}", f"bench_health_ckpt_{suffix}")
    provision_ingest_topics(AdminClient(kafka), registry, topics)
    config = load_ingest_config().with_topics(topics).replace("bench", staging_uri=str(work / "staging"))
    first = 14102100
    for hour in range(first, first + args.hours):
        HourlyIngestor(find_partition(str(work / "staging"), hour), config=config, kafka_config=kafka,
                       registry=registry).run()
    health = load_health_config().replace(state_uri=str(work / "state.json"), report_uri=str(work / "reports"))
    inputs = HealthInputs(config=health, kafka_config=kafka, registry=registry, ingest=config,
                          catalog=sandbox_catalog({"raw": topics.raw}))

    began = time.monotonic()
    outcome = check_reconciliation(inputs)
    ours = time.monotonic() - began
    assert outcome.ok, outcome.summary
    records = sum(r["raw"] for r in outcome.rows)

    def timed_read(count_hours) -> float:
        consumer = Consumer(reader_config(kafka, f"bench-health-{uuid.uuid4().hex}"))
        began = time.monotonic()
        count = 0
        for batch in read_batches_to_end(consumer, [topics.raw], batch=10_000, timeout=600):
            count_hours([message.value() for message in batch])
            count += len(batch)
        elapsed = time.monotonic() - began
        consumer.close()
        assert count == records, (count, records)
        return elapsed

    python_reader = HourReader(schema_fetcher(registry))
    python_reader._counts = None  # the path without the C codec
    one_at_a_time = timed_read(python_reader.count)
    decoder = AvroDecoder(schema_fetcher(registry), reader_schema=_HOUR_ONLY)
    projection = timed_read(lambda values: Counter(decoder.decode(value)["hour"] for value in values))
    ceiling = timed_read(lambda values: None)
    figures = {"records": records, "hours": args.hours,
               "reconciliation_records_per_s": round(records / ours),
               "one_at_a_time_records_per_s": round(records / one_at_a_time),
               "projection_records_per_s": round(records / projection),
               "read_only_records_per_s": round(records / ceiling)}
    print(f"{records:,} raw records over {args.hours} hours")
    print(f"  reconciliation (the check, both topics) {figures['reconciliation_records_per_s']:>12,} records/s")
    print(f"  one at a time (Python, no C codec)      {figures['one_at_a_time_records_per_s']:>12,} records/s")
    print(f"  projection decode (fastavro, hour only) {figures['projection_records_per_s']:>12,} records/s")
    print(f"  read only (no decode, the ceiling)      {figures['read_only_records_per_s']:>12,} records/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
