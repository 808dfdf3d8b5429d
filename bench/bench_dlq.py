"""Benchmark DLQ reprocessing against the seed's error handler, on the same dead letters, in one run.

    . scripts/local-env.sh && .venv/bin/python bench/bench_dlq.py [--rows 200000] [--fault-rate 0.02]

It generates an Avazu-format file with every kind of broken row (``--fault-rate`` per kind),
ingests it into sandbox topics with the real ingestion, so the sandbox DLQ holds one Avro envelope
per bad row, and writes the same dead letters as the seed's JSON records to a topic of their own.
Then, against the local broker and registry:

* ``reprocessor`` - include.dlq: read the DLQ as a consumer group (read_committed), decode each
  envelope, classify it by reason, repair it (re-validated by the row contract) into the raw topic or
  park it, archive the parked ones, commit outcomes and offsets in one transaction per batch;
* ``seed`` - seed 002 day 4's ``DLQHandler.process_dlq`` as written: kafka-python, JSON, one record
  at a time, ``producer.send`` to the retry topic for "retriable" errors (all of the seed's are
  "Transformation failed"), no repair, no archive, offsets auto-committed. Its 10 s
  ``consumer_timeout_ms`` at the end is not counted: its time runs from its first to its last record.

Both figures are records/s over the same dead letters; the last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _kafka_config() -> dict:
    return {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}


def _registry():

    from include.kafka.registry import registry_client

    return registry_client(os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"))


def _fill_dlq(rows: int, fault_rate: float, workdir: Path, run: str) -> tuple[dict, int, object]:
    """Sandbox topics whose DLQ holds the dead letters of a generated file; returns topics, count, truth."""
    from confluent_kafka.admin import AdminClient

    from include.avazu.generator import FaultKind, GeneratorSpec, generate
    from include.ingest.config import IngestTopics, load_ingest_config
    from include.ingest.ingestor import HourlyIngestor
    from include.ingest.staging import find_partition, stage_source
    from include.ingest.topics import provision_ingest_topics
    from include.kafka_admin.sandbox import provision_sandbox

    source = workdir / "train.csv.gz"
    kinds = [kind for kind in FaultKind if kind is not FaultKind.DUPLICATE_ID]
    truth = generate(GeneratorSpec(rows, hours=1, seed=99, fault_rates={kind: fault_rate for kind in kinds}), source)
    stage_source(str(source), str(workdir / "staging"))
    admin, registry = AdminClient(_kafka_config()), _registry()
    ingest = IngestTopics(f"bench_dlq_raw_{run}", f"bench_dlq_dlq_{run}", f"bench_dlq_ckpt_{run}")
    provision_ingest_topics(admin, registry, ingest)
    copies = {"dlq_retry_1": f"bench_dlq_retry1_{run}", "dlq_retry_2": f"bench_dlq_retry2_{run}",
              "dlq_retry_3": f"bench_dlq_retry3_{run}", "dlq_parked": f"bench_dlq_parked_{run}"}
    provision_sandbox(admin, registry, copies)
    config = load_ingest_config().with_topics(ingest)
    result = HourlyIngestor(find_partition(str(workdir / "staging"), 14102100), config=config,
                            kafka_config=_kafka_config(), registry=registry).run()
    topics = {"dlq": ingest.dlq, "repaired": ingest.raw, "parked": copies["dlq_parked"],
              "retry1": copies["dlq_retry_1"], "retry2": copies["dlq_retry_2"],
              "retry3": copies["dlq_retry_3"]}
    return topics, result.rows_dead_lettered, truth


def _seed_dlq(lines: list[bytes], bad: dict[int, object], run: str) -> tuple[str, str]:
    """The same dead letters as the seed's JSON DLQ records, on a topic of their own."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    dlq, retry = f"bench_seed_dlq_{run}", f"bench_seed_retry_{run}"
    admin = AdminClient(_kafka_config())
    for future in admin.create_topics([NewTopic(dlq, 1, 1), NewTopic(retry, 1, 1)]).values():
        future.result(30)
    producer = Producer(_kafka_config())
    for line in sorted(bad):
        producer.produce(dlq, json.dumps({"line_number": line, "raw_data": lines[line - 1].decode("utf-8", "replace"),
                                          "error": "Transformation failed",
                                          "timestamp": int(time.time() * 1000)}).encode())
        producer.poll(0)
    assert producer.flush(60) == 0
    return dlq, retry


def _run_seed(dlq: str, retry: str, expected: int) -> dict:
    """Seed 002 day 4's DLQHandler.process_dlq, condensed but unchanged in what it does per record."""
    import logging
    import warnings

    from kafka import KafkaConsumer, KafkaProducer

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logger = logging.getLogger("seed.error_handler")
    consumer = KafkaConsumer(dlq, bootstrap_servers=_kafka_config()["bootstrap.servers"],
                             value_deserializer=lambda m: json.loads(m.decode("utf-8")), auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, group_id=f"seed-{uuid.uuid4().hex}")
    producer = KafkaProducer(bootstrap_servers=_kafka_config()["bootstrap.servers"],
                             value_serializer=lambda v: json.dumps(v).encode("utf-8"))
    stats = {"processed": 0, "retried": 0, "skipped": 0}
    retriable_errors = ["Transformation failed", "Timeout", "Connection error"]
    first = last = None
    for message in consumer:
        first = first or time.monotonic()
        error_event = message.value
        logger.debug("DLQ message at line %s: %s", error_event.get("line_number"), error_event.get("error"))
        if error_event.get("retry_count", 0) < 3 and any(e in error_event.get("error", "") for e in retriable_errors):
            producer.send(retry, value=error_event)
            stats["retried"] += 1
        else:
            stats["skipped"] += 1
        stats["processed"] += 1
        last = time.monotonic()
        if stats["processed"] == expected:
            break
    producer.flush()
    last = time.monotonic()
    consumer.close()
    producer.close()
    seconds = (last - first) if first else 0.0
    return {**stats, "seconds": round(seconds, 3), "records_per_s": round(stats["processed"] / seconds, 1) if seconds else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--fault-rate", type=float, default=0.02, help="share of rows broken in each way")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from include.dlq.config import load_dlq_config
    from include.dlq.reprocessor import DlqReprocessor
    from include.kafka_admin.catalog import topic_for

    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-dlq-") as tmp:
        workdir = Path(tmp)
        topics, dead, truth = _fill_dlq(args.rows, args.fault_rate, workdir, run)
        lines = (workdir / "train.csv.gz").read_bytes()
        import gzip

        source_lines = gzip.decompress(lines).split(b"\n")
        seed_dlq, seed_retry = _seed_dlq(source_lines, truth.bad_lines(), run)
        print(f"{dead:,} dead letters ({len(truth.repairs):,} repairable) from {args.rows:,} generated rows")

        config = dataclasses.replace(load_dlq_config(), archive_uri=str(workdir / "archive"))
        spec = config.dlq(topic_for("dlq")).sandboxed(topics, group_id=f"bench-dlq-{run}")
        ours = DlqReprocessor(spec, config, kafka_config=_kafka_config(), registry=_registry()).run()
        seed = _run_seed(seed_dlq, seed_retry, dead)
    assert ours.consumed == dead and seed["processed"] == dead, (ours.consumed, seed["processed"], dead)
    ratio = ours.records_per_s / seed["records_per_s"] if seed["records_per_s"] else float("inf")
    print(f"{'approach':<58} {'records':>9} {'seconds':>8} {'records/s':>10}")
    print(f"{'include.dlq: classify, repair, park + archive, exactly once':<58} {ours.consumed:>9,} "
          f"{ours.seconds:>8.2f} {ours.records_per_s:>10,.0f}")
    print(f"{'seed error_handler.py: kafka-python, JSON, one by one':<58} {seed['processed']:>9,} "
          f"{seed['seconds']:>8.2f} {seed['records_per_s']:>10,.0f}")
    print(f"reprocessor outcomes: {ours.repaired:,} repaired, {ours.retried:,} retried, {ours.parked:,} parked "
          f"in {ours.transactions} transactions; seed: {seed['retried']:,} sent to retry, {seed['skipped']:,} skipped")
    print(json.dumps({"dead_letters": dead, "reprocessor_records_per_s": ours.records_per_s,
                      "seed_records_per_s": seed["records_per_s"], "ratio": round(ratio, 2),
                      "repaired": ours.repaired, "parked": ours.parked}))


if __name__ == "__main__":
    main()
