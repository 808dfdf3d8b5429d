"""Benchmark the hourly ingestion against the seed's producer and against a librdkafka ceiling.

It generates an Avazu-format gzip file once (kept in --workdir), stages it into hour partitions
(timed: a one-time pass per source), then runs, each in a fresh child process so that peak memory
is that run's alone (``os.wait4`` rusage), against the local broker and registry:

* ``ingest``  - include.ingest: every staged hour through ``HourlyIngestor`` - read, validate with
  the contract, Avro wire format, keyed produce, DLQ envelopes, one transaction per chunk with its
  checkpoint (exactly once), counts reconciled - with ``--row-codec`` (ingest.yaml's by default);
* ``arrow``   - the same with ``row_codec: arrow``, the fallback where the C codec is not built:
  the C codec's gain, measured in the same run;
* ``seed``    - seed 002 day 4's ``AvazuKafkaProducer`` as written: kafka-python, a JSON dict per
  row with type conversion and metadata, ``send()`` one record at a time with callbacks, the DLQ
  sent synchronously, ``batch_size=100``, ``linger_ms=10``, ``acks='all'``. Run on the first
  ``--seed-rows`` rows (its rate does not depend on the file size). Three changes so it runs at
  all: no compression (the seed's snappy needs python-snappy, which is not installed), no
  ``buffer_memory`` (kafka-python 3 dropped it), and the file is decoded with ``errors="replace"``
  (the seed's ``gzip.open(..., "rt")`` stops at the first invalid UTF-8 byte);
* ``ceiling`` - the same producer settings and transaction cadence as ``ingest``, producing the
  same Avro payloads and keys (encoded before the clock starts) in a tight loop: what librdkafka
  and the broker on this machine allow a Python producer, with no reading, validation or encoding.
  ``--java`` adds Kafka's own ProducerPerformance with the same record size and settings;
* ``profile`` - cProfile of ``ingest`` on one hour: where the time goes in the producing thread
  (its ``acquire`` is the wait for the reader and encoding threads, which cProfile does not see;
  ``py-spy record --threads`` shows those).

``ingest`` runs once one hour after the other (one task) and once ``--parallel`` hours at a time
in as many processes (a backfill with ``max_active_runs``), into topics of its own each time.

    python bench/bench_ingest.py --rows 2000000 --hours 12
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_ROWS_PER_S = 100_000


def _kafka_config() -> dict:
    return {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}


def _registry():

    from include.kafka.registry import registry_client

    return registry_client(os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"))


def _settings(options: dict):
    """include/config/ingest.yaml with the bench's chunk size, codec, compression and topics, as the DAG builds it."""
    from include.ingest.config import IngestTopics, load_ingest_config

    config = load_ingest_config().with_overrides({"chunk_rows": options["chunk_rows"]})
    producer = {**config.producer, **({"compression.type": options["compression"]} if options.get("compression") else {})}
    config = config.replace("bench options", progress_every_s=3600, producer=producer,
                            row_codec=options.get("row_codec") or config.row_codec)
    return config.with_topics(IngestTopics(**options["topics"])) if options.get("topics") else config


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children -----------------------------------------------------------------------------------

def _child_ingest(options: dict) -> dict:
    from include.ingest.ingestor import HourlyIngestor
    from include.ingest.staging import find_partition, read_manifest

    registry = _registry()
    manifest = read_manifest(options["staging"])
    hours = sorted(int(h) for h in manifest["hours"])[: options.get("max_hours") or None]
    # With several children at once, child i of n takes every n-th hour.
    hours = hours[options.get("slot", 0)::options.get("slots", 1)]
    totals = {"rows": 0, "produced": 0, "dead_lettered": 0, "chunks": 0, "seconds": 0.0,
              "producing_s": 0.0, "committing_s": 0.0, "hours": len(hours)}
    settings = _settings(options)
    for index, hour in enumerate(hours):
        result = HourlyIngestor(find_partition(options["staging"], hour), config=settings, kafka_config=_kafka_config(),
                                registry=registry).run()
        assert result.complete and result.rows_read == result.partition_rows
        totals["rows"] += result.rows_read
        totals["produced"] += result.rows_produced
        totals["dead_lettered"] += result.rows_dead_lettered
        totals["chunks"] += result.chunks
        totals["seconds"] += result.duration_s
        totals["producing_s"] += result.seconds_producing
        totals["committing_s"] += result.seconds_committing
        if index == 0:
            totals["peak_rss_after_first_hour_mb"] = _peak_rss_mb()
            totals["codec"] = result.row_codec
    return totals


def _child_profile(options: dict) -> dict:
    profiler = cProfile.Profile()
    profiler.enable()
    totals = _child_ingest({**options, "max_hours": 1})
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(18)
    body = out.getvalue()
    totals["profile"] = body[body.index("ncalls"):] if "ncalls" in body else body
    return totals


def _child_ceiling(options: dict) -> dict:
    """Pre-encoded payloads of the first hour, produced over and over up to the same row count."""
    from confluent_kafka import Producer

    from include.avazu.contract import parse_line
    from include.avazu.lines import LineSource, TextLines
    from include.encoding.rows import AdEventEncoder, partition_key
    from include.ingest.staging import find_partition, read_manifest

    manifest = read_manifest(options["staging"])
    first_hour = min(int(h) for h in manifest["hours"])
    encoder = AdEventEncoder(options["schema_id"])
    payloads: list[tuple[bytes, str]] = []
    for item in LineSource(find_partition(options["staging"], first_hour).data_uri):
        if type(item) is TextLines:
            for line in item.lines:
                record = parse_line(line)
                if type(record) is dict:
                    payloads.append((encoder.encode(record), partition_key(record)))
    settings = _settings(options)
    producer = Producer({**_kafka_config(), **settings.producer, "transactional.id": f"bench-ceiling-{uuid.uuid4().hex}",
                         "enable.idempotence": True, "acks": "all", "delivery.report.only.error": True,
                         "transaction.timeout.ms": settings.transaction_timeout_ms})
    producer.init_transactions(60)
    topic, rows, chunk, total = options["topic"], options["rows"], settings.chunk_rows, len(payloads)
    produce, poll = producer.produce, producer.poll
    started = time.monotonic()
    sent = 0
    while sent < rows:
        producer.begin_transaction()
        end = min(rows, sent + chunk)
        for n in range(sent, end):
            value, key = payloads[n % total]
            try:
                produce(topic, value, key)
            except BufferError:
                poll(0.05)
                produce(topic, value, key)
            if n % 5000 == 0:
                poll(0)
        producer.commit_transaction(120)
        sent = end
    seconds = time.monotonic() - started
    return {"rows": sent, "seconds": seconds, "payload_bytes_avg": sum(len(v) for v, _ in payloads) / total}


def _child_seed(options: dict) -> dict:
    """Seed 002 day 4 (src/kafka/data_transformer.py + producer.py), condensed but unchanged in what it does per row."""
    import gzip
    import json as json_module
    from datetime import datetime

    import warnings

    from kafka import KafkaProducer

    # kafka-python 3 warns that a lambda is not a Serializer class; the seed passes a lambda.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    int_columns = {"click", "hour", "C1", "banner_pos", "device_type", "device_conn_type",
                   "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"}
    stats = {"sent": 0, "errors": 0, "dlq": 0}
    header: list[str] = []

    def parse_csv_line(values: list[str]):
        if len(header) != len(values):
            return None
        result = {}
        for col, val in zip(header, values):
            if not val or val == "":
                result[col] = None
            elif col in int_columns:
                try:
                    result[col] = int(val)
                except ValueError:
                    result[col] = None
            else:
                result[col] = str(val)
        return result

    def transform(csv_line: str, line_number: int):
        values = csv_line.strip().split(",")
        event = parse_csv_line(values)
        if event is None:
            return None
        event["_source"] = "avazu"
        event["_processed_at"] = datetime.utcnow().isoformat()
        event["_line_number"] = line_number
        return event

    def on_success(metadata):
        stats["sent"] += 1

    def on_error(exc):
        stats["errors"] += 1

    producer = KafkaProducer(
        bootstrap_servers=_kafka_config()["bootstrap.servers"],
        value_serializer=lambda v: json_module.dumps(v).encode("utf-8"),
        acks="all", retries=3, batch_size=100, linger_ms=10,
        max_in_flight_requests_per_connection=5, compression_type=None,
    )
    rows = options["rows"]
    started = time.monotonic()
    with gzip.open(options["source"], "rt", encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle):
            if line_number == 0:
                header = line.strip().split(",")
                continue
            if line_number > rows:
                break
            event = transform(line, line_number)
            if event is None:
                producer.send(options["dlq_topic"], value={"line_number": line_number, "raw_data": line.strip(),
                                                           "error": "Transformation failed",
                                                           "timestamp": int(time.time() * 1000)}).get(timeout=10)
                stats["dlq"] += 1
                continue
            producer.send(options["raw_topic"], value=event).add_callback(on_success).add_errback(on_error)
    producer.flush(timeout=300)
    seconds = time.monotonic() - started
    producer.close()
    return {"rows": rows, "seconds": seconds, "sent": stats["sent"], "dlq": stats["dlq"], "errors": stats["errors"]}


CHILDREN = {"ingest": _child_ingest, "seed": _child_seed, "ceiling": _child_ceiling, "profile": _child_profile}


# -- the parent ---------------------------------------------------------------------------------

def _run_child(mode: str, options: dict) -> dict:
    return _run_children(mode, [options])


def _run_children(mode: str, options: list[dict]) -> dict:
    """Run one child per options dict at the same time; rows add up, the rate is over the wall time of all."""
    started = time.monotonic()
    children = [subprocess.Popen([sys.executable, __file__, "--child", mode, json.dumps(o)], stdout=subprocess.PIPE,
                                 text=True, cwd=ROOT) for o in options]
    results, peaks = [], []
    for child in children:
        _, status, usage = os.wait4(child.pid, 0)
        output = child.stdout.read()
        child.stdout.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{mode} failed with exit status {os.waitstatus_to_exitcode(status)}")
        results.append(json.loads(output.strip().splitlines()[-1]))
        peaks.append(usage.ru_maxrss / 1024)  # kilobytes on Linux
    wall = time.monotonic() - started
    result = results[0]
    if len(results) > 1:
        result = {key: sum(r[key] for r in results) if isinstance(value, (int, float)) else value
                  for key, value in results[0].items()}
        # Side by side, the clock that counts is the slowest child's.
        result["seconds"] = max(r["seconds"] for r in results)
    result["wall_s"] = wall
    result["peak_rss_mb"] = max(peaks)
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def _run_java_ceiling(rows: int, record_size: int, topic: str, producer: dict) -> dict | None:
    from devstack.javas import find_java

    libs = Path.home() / ".cache" / "avazu-kafka-devstack" / "kafka-4.3.1" / "libs"
    java = find_java(17)
    if java is None or not libs.is_dir():
        print("java ceiling skipped: no Java 17+ or no Kafka libs in ~/.cache/avazu-kafka-devstack")
        return None
    props = [f"bootstrap.servers={_kafka_config()['bootstrap.servers']}", "acks=all", "enable.idempotence=true",
             f"compression.type={producer['compression.type']}", f"linger.ms={producer['linger.ms']}",
             f"batch.size={producer['batch.size']}"]
    started = time.monotonic()
    out = subprocess.run([java.path, "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
                          "--topic", topic, "--num-records", str(rows), "--record-size", str(record_size),
                          "--throughput", "-1", "--producer-props", *props], capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    summary = [line for line in out.stdout.splitlines() if "records sent" in line]
    return {"rows": rows, "seconds": seconds, "line": summary[-1] if summary else out.stdout[-500:] + out.stderr[-500:]}


def delete_topics(admin, topics: list[str]) -> None:
    """Delete a run's sandbox topics; one left behind is worth a line, not a crash."""
    if not topics:
        return
    for future in admin.delete_topics(topics).values():
        try:
            future.result()
        except Exception as error:
            print(f"could not delete a bench topic: {error}")


def _calibration_s() -> float:
    # Figures from a shared VM mean little without a yardstick; this takes ~0.15-0.2 s on a current laptop core.
    started = time.perf_counter()
    sum(range(10**7))
    return time.perf_counter() - started


def _source(workdir: Path, rows: int, hours: int) -> Path:
    from include.avazu.generator import FaultKind, GeneratorSpec, generate

    path = workdir / f"avazu_{rows}_{hours}h.csv.gz"
    if not path.exists():
        truth = generate(GeneratorSpec(rows, hours=hours, seed=7, fault_rates={kind: 0.0001 for kind in FaultKind}), path)
        print(f"generated {path} ({rows:,} rows over {hours} hours, {path.stat().st_size / 1e6:.0f} MB) in {truth.elapsed_s:.1f} s")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--hours", type=int, default=12, help="hours the rows are spread over (real Avazu: ~170k rows/hour)")
    parser.add_argument("--seed-rows", type=int, default=100_000, help="rows for the seed baseline")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--compression", choices=["lz4", "zstd", "snappy", "none"], default=None,
                        help="override the config's compression.type")
    parser.add_argument("--modes", nargs="+", choices=[*CHILDREN, "arrow"], default=["ingest", "arrow", "seed", "ceiling", "profile"])
    parser.add_argument("--row-codec", choices=["auto", "native", "arrow"], default=None,
                        help="row_codec of (a), (a2) and the profile (default: include/config/ingest.yaml's)")
    parser.add_argument("--java", action="store_true", help="also run Kafka's ProducerPerformance as a second ceiling")
    parser.add_argument("--parallel", type=int, default=2,
                        help="also ingest this many hours at a time, one process each (the DAG's max_active_runs); 1: skip")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avazu-ingest-bench"))
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, options = args.child
        print(json.dumps(CHILDREN[mode](json.loads(options)), default=str))
        return 0

    from confluent_kafka.admin import AdminClient, NewTopic

    from include.ingest.config import load_ingest_config
    from include.encoding.rows import load_ad_event_schema
    from include.ingest.staging import stage_source
    from include.ingest.config import IngestTopics
    from include.ingest.topics import provision_ingest_topics
    from include.kafka.registry import lookup_schema_id

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine speed: sum(range(10**7)) takes {_calibration_s():.2f} s here (a current laptop core: ~0.15-0.2 s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    source = _source(args.workdir, args.rows, args.hours)
    staging = args.workdir / f"staging_{args.rows}_{args.hours}h"
    staged = stage_source(str(source), str(staging), progress_every_s=3600)
    print(f"staging ({staged.action}): {staged.rows:,} rows in {staged.hours} hours"
          + (f", {staged.elapsed_s:.1f} s, {staged.rows_per_s:,.0f} rows/s (one pass per source, not per run)"
             if staged.action != "unchanged" else ""))

    admin, registry = AdminClient(_kafka_config()), _registry()
    run = uuid.uuid4().hex[:8]
    created: list[str] = []

    def sandbox(name: str) -> IngestTopics:
        topics = IngestTopics(f"bench_{name}_raw_{run}", f"bench_{name}_dlq_{run}", f"bench_{name}_ckpt_{run}")
        provision_ingest_topics(admin, registry, topics)
        created.extend(topics.as_dict().values())
        return topics

    compression = {"none": "none"}.get(args.compression, args.compression)
    common = {"staging": str(staging), "chunk_rows": args.chunk_rows, "compression": compression, "row_codec": args.row_codec}
    producer = {**load_ingest_config().producer, **({"compression.type": compression} if compression else {})}
    print(f"producer: {producer}, chunk_rows {args.chunk_rows:,}")
    results: dict[str, dict] = {}
    try:
        if "ingest" in args.modes:
            results["ingest"] = _run_child("ingest", {**common, "topics": sandbox("ingest").as_dict()})
            if args.parallel > 1:
                topics = sandbox("parallel").as_dict()
                results["parallel"] = _run_children("ingest", [{**common, "topics": topics, "slot": i, "slots": args.parallel}
                                                               for i in range(args.parallel)])
        if "arrow" in args.modes:
            results["arrow"] = _run_child("ingest", {**common, "row_codec": "arrow", "topics": sandbox("arrow").as_dict()})
        if "seed" in args.modes:
            topics = [f"bench_seed_raw_{run}", f"bench_seed_dlq_{run}"]
            for future in admin.create_topics([NewTopic(topics[0], 3, 1), NewTopic(topics[1], 1, 1)]).values():
                future.result()
            created.extend(topics)
            results["seed"] = _run_child("seed", {"source": str(source), "rows": min(args.seed_rows, args.rows),
                                                  "raw_topic": topics[0], "dlq_topic": topics[1]})
        if "ceiling" in args.modes:
            topics = sandbox("ceiling")
            schema_id = lookup_schema_id(registry, f"{topics.raw}-value", load_ad_event_schema())
            results["ceiling"] = _run_child("ceiling", {**common, "topic": topics.raw, "rows": args.rows, "schema_id": schema_id})
        if args.java and "ceiling" in results:
            topic = f"bench_java_{run}"
            admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
            created.append(topic)
            results["java"] = _run_java_ceiling(args.rows, round(results["ceiling"]["payload_bytes_avg"]), topic, producer)
        if "profile" in args.modes:
            results["profile"] = _run_child("profile", {**common, "topics": sandbox("profile").as_dict()})
    finally:
        if not args.keep_topics:
            delete_topics(admin, created)

    _report(results, args)
    return 0


def _report(results: dict[str, dict], args) -> None:
    print("\napproach                                             rows   seconds      rows/s  peak RSS MB")
    codec = results.get("ingest", results.get("parallel", {})).get("codec", "?")
    names = {"ingest": f"(a) HourlyIngestor ({codec} codec): EOS, DLQ",
             "parallel": f"(a2) the same, {args.parallel} hours at a time",
             "arrow": "(a3) (a) with the arrow codec (fallback)",
             "seed": "(b) seed day 4: kafka-python, JSON, one by one",
             "ceiling": "(c) ceiling: librdkafka, pre-encoded payloads"}
    for mode, name in names.items():
        if mode in results:
            r = results[mode]
            print(f"{name:<48} {r['rows']:>10,} {r['seconds']:>9.1f} {r['rows_per_s']:>11,.0f} {r['peak_rss_mb']:>12.0f}")
    if results.get("java"):
        print(f"(c') Kafka ProducerPerformance, same record size: {results['java']['line']}")
    ingest = results.get("ingest")
    if ingest:
        print(f"\n(a) {ingest['hours']} hours, {ingest['chunks']} chunks: {ingest['produced']:,} produced + "
              f"{ingest['dead_lettered']:,} dead-lettered = {ingest['rows']:,} read; time producing (read, validate, "
              f"encode, produce, flush) {ingest['producing_s']:.1f} s, waiting for commits {ingest['committing_s']:.1f} s; "
              f"peak RSS after the first hour {ingest['peak_rss_after_first_hour_mb']:.0f} MB, after all "
              f"{ingest['peak_rss_mb']:.0f} MB (held chunks are bounded by chunk_rows, not by the file: compare --rows "
              f"{args.rows:,} with --rows {2 * args.rows:,})")
        if "seed" in results:
            print(f"(a)/(b) = {ingest['rows_per_s'] / results['seed']['rows_per_s']:.1f}x the seed's rate "
                  f"(seed: {results['seed']['sent']:,} sent, {results['seed']['dlq']:,} to its DLQ, {results['seed']['errors']} errors)")
        if "arrow" in results:
            print(f"(a)/(a3) = {ingest['rows_per_s'] / results['arrow']['rows_per_s']:.2f}x the rate with the arrow codec")
        if "ceiling" in results:
            print(f"(a)/(c) = {ingest['rows_per_s'] / results['ceiling']['rows_per_s']:.2f} of the ceiling "
                  f"(payload {results['ceiling']['payload_bytes_avg']:.0f} bytes on average)")
        def verdict(rate: float) -> str:
            return f"{rate:,.0f} rows/s {'met' if rate >= TARGET_ROWS_PER_S else 'MISSED'}"

        print(f"target {TARGET_ROWS_PER_S:,} rows/s end to end (process start included): one hour at a time "
              f"{verdict(ingest['rows_per_s'])}"
              + (f"; {args.parallel} at a time {verdict(results['parallel']['rows_per_s'])}" if "parallel" in results else ""))
    if "profile" in results:
        print(f"\nwhere the time goes: cProfile of one hour ({results['profile']['rows']:,} rows; profiling slows "
              f"Python calls, so read the ratios):\n{results['profile']['profile']}")


if __name__ == "__main__":
    sys.exit(main())
