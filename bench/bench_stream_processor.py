"""Benchmark of the seed 004 stream processor: throughput and end-to-end latency, against baselines.

    . scripts/local-env.sh && .venv/bin/python bench/bench_stream_processor.py [--events 40000]

Three ways of running the same analytics transform (JSON in, Avro out, bad events to the DLQ):

- ``exactly-once``: include.streaming.StreamProcessor - batches, one Kafka transaction per
  checkpoint (produced records + input offsets), read_committed; with its default checkpoint
  interval (0.1 s) and with 1 s, to show what the commits cost.
- ``naive``: the seed's loop in confluent-kafka terms - poll one record, transform, produce,
  ``flush()`` after every record, offsets auto-committed in the background (at-most/at-least once).
- ``plain async``: the same loop without the per-record flush (still no transactions): what the
  transactions cost, as opposed to what batching buys.

Throughput: a backlog of ``--events`` events is processed; records/s is counted from the first
record transformed to the last one. Latency: events are produced at ``--rate`` events/s for
``--seconds`` while the processor runs in its own process, once one warm-up event per input
partition has come through (start-up is not latency), and a read_committed consumer of
analytics-events measures input CreateTime -> analytics event consumed. Everything runs on this
machine next to the broker, so the figures are relative, not absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, KafkaError, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from include.kafka.wire import AvroDecoder  # noqa: E402
from include.streaming import StreamProcessor, TransformContext  # noqa: E402
from include.streaming.analytics import analytics_transform  # noqa: E402
from include.streaming.records import InputRecord  # noqa: E402
from include.streaming.simulators import (  # noqa: E402
    SIMULATOR_PRODUCER_SETTINGS,
    publish,
    purchase_events,
    web_events,
)
from include.streaming.topics import ensure_topics  # noqa: E402
from include.kafka.registry import registry_client, schema_fetcher  # noqa: E402

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
CONFIG = {"bootstrap.servers": BOOTSTRAP}
BAD_RATIO = 0.05


class Topics:
    """The run's input pair and one output pair per contender, so runs never mix their output."""

    def __init__(self, run: str, contender: str):
        self.web = f"bench_{run}_web"
        self.purchase = f"bench_{run}_purchase"
        self.analytics = f"bench_{run}_{contender}_analytics"
        self.dlq = f"bench_{run}_{contender}_dlq"
        self.group = f"bench_{run}_{contender}"


class TimedTransform:
    """Wraps a transform to note when the first and the last record went through it."""

    def __init__(self, transform: Callable[[InputRecord], Any]):
        self.transform = transform
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0

    def __call__(self, record: InputRecord):
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1
        return self.transform(record)

    def rate(self) -> float:
        if not self.first or self.last == self.first:
            return 0.0
        return self.count / (self.last - self.first)


def build_transform(topics: Topics) -> Callable[[InputRecord], Any]:
    registry = registry_client(REGISTRY)
    context = TransformContext([topics.web, topics.purchase], topics.analytics, topics.dlq, registry)
    return analytics_transform(context, topics.web, topics.purchase)


def naive_loop(topics: Topics, transform, flush_each: bool, stop: Callable[[int], bool],
               idle_timeout: float = 3.0) -> int:
    """The seed's processor: one record at a time, auto-commit, optionally flush per record."""
    consumer = Consumer({**CONFIG, "group.id": topics.group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": True})
    producer = Producer({**CONFIG, "linger.ms": 5})
    consumer.subscribe([topics.web, topics.purchase])
    processed = 0
    last_record: float | None = None  # idle only counts once records have flowed
    try:
        while not stop(processed):
            message = consumer.poll(0.2)
            if message is None:
                if last_record is not None and time.monotonic() - last_record > idle_timeout:
                    break
                continue
            if message.error():
                continue
            last_record = time.monotonic()
            record = InputRecord.from_message(message)
            try:
                for output in transform(record):
                    producer.produce(topics.analytics, key=output.key, value=output.value)
            except Exception:
                producer.produce(topics.dlq, key=record.key, value=record.value)
            processed += 1
            if flush_each:
                producer.flush()
            else:
                producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()
    return processed


def fill_backlog(topics: Topics, events: int) -> None:
    producer = Producer({**CONFIG, **SIMULATOR_PRODUCER_SETTINGS, "linger.ms": 20})
    publish(producer, topics.web, web_events(events // 2, seed=1, bad_ratio=BAD_RATIO))
    publish(producer, topics.purchase, purchase_events(events - events // 2, seed=1,
                                                       bad_ratio=BAD_RATIO))


def throughput(run: str, events: int, naive_budget: float) -> dict[str, float]:
    """Records/s of each contender on the same backlog."""
    admin = AdminClient(CONFIG)
    results: dict[str, float] = {}

    inputs = Topics(run, "inputs")
    ensure_topics(admin, [inputs.web, inputs.purchase])
    fill_backlog(inputs, events)
    for label, commit_interval in (("0.1s", 0.1), ("1s", 1.0)):
        topics = Topics(run, f"eos{label.replace('.', '')}")
        ensure_topics(admin, [topics.analytics, topics.dlq])
        timed = TimedTransform(build_transform(topics))
        counts = StreamProcessor("bench", timed, CONFIG, [topics.web, topics.purchase],
                                 topics.analytics, group_id=topics.group, dlq_topic=topics.dlq,
                                 commit_interval=commit_interval).run(idle_timeout=3)
        assert counts.records_in == events, counts
        results[f"exactly-once, checkpoint {label}"] = timed.rate()

    for name, flush_each, budget in (("plain async loop", False, None),
                                     ("naive loop (flush per record)", True, naive_budget)):
        topics = Topics(run, name.split()[0])
        ensure_topics(admin, [topics.analytics, topics.dlq])
        timed = TimedTransform(build_transform(topics))
        began = time.monotonic()
        naive_loop(topics, timed, flush_each,
                   stop=lambda n: n >= events or (budget is not None
                                                  and time.monotonic() - began > budget))
        results[name] = timed.rate()
    return results


def latency(run: str, contender: str, rate: float, seconds: float) -> dict[str, float]:
    """p50/p99 of input CreateTime -> analytics event consumed, with the processor in its own process."""
    run = f"{run}_lat_{contender}"
    topics = Topics(run, contender)
    ensure_topics(AdminClient(CONFIG), [topics.web, topics.purchase, topics.analytics, topics.dlq])
    if contender == "eos":
        command = [sys.executable, "-m", "include.streaming", "analytics", "--web-topic", topics.web,
                   "--purchase-topic", topics.purchase, "--output", topics.analytics,
                   "--dlq", topics.dlq, "--group", topics.group, "--idle-timeout", "6",
                   "--bootstrap-servers", BOOTSTRAP, "--registry-url", REGISTRY]
    else:
        command = [sys.executable, __file__, "naive-worker", "--run", run, "--contender", contender]
    worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    registry = registry_client(REGISTRY)
    decoder = AvroDecoder(schema_fetcher(registry))
    consumed_at: dict[tuple[str, int, int], float] = {}
    reading = threading.Event()
    reading.set()

    def read() -> None:
        consumer = Consumer({**CONFIG, "group.id": f"{topics.group}_reader",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        consumer.subscribe([topics.analytics])
        while reading.is_set():
            # One record as soon as it is there, then what is already fetched: consume(500, 0.1)
            # would hold every record for up to 0.1 s and add that to each latency measured.
            first = consumer.poll(0.1)
            for message in ([first, *consumer.consume(499, 0)] if first is not None else []):
                if message.error():
                    continue
                now = time.time()
                event = decoder.decode(message.value())
                consumed_at[(event["source_topic"], event["source_partition"],
                             event["source_offset"])] = now
        consumer.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = Producer({**CONFIG, **SIMULATOR_PRODUCER_SETTINGS})
    warm_up(producer, topics, consumed_at)
    count = int(rate * seconds)
    senders = [threading.Thread(target=publish, args=(producer, topics.web,
                                                      web_events(count // 2, seed=2, bad_ratio=0),
                                                      rate / 2)),
               threading.Thread(target=publish, args=(producer, topics.purchase,
                                                      purchase_events(count // 2, seed=2, bad_ratio=0),
                                                      rate / 2))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    deadline = time.monotonic() + 30
    while len(consumed_at) < 2 * (count // 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    reading.clear()
    reader.join(10)
    worker.wait(60)

    # Input CreateTime of every event, read back by coordinates.
    produced_at: dict[tuple[str, int, int], float] = {}
    consumer = Consumer({**CONFIG, "group.id": f"{topics.group}_inputs",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.subscribe([topics.web, topics.purchase])
    ends: set[tuple[str, int]] = set()
    while len(ends) < 6:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    ends.add((message.topic(), message.partition()))
                continue
            produced_at[(message.topic(), message.partition(), message.offset())] = \
                message.timestamp()[1] / 1000
    consumer.close()
    latencies = sorted((consumed_at[k] - produced_at[k]) * 1000 for k in consumed_at if k in produced_at)
    if len(latencies) < 2:
        return {"events": len(latencies), "p50_ms": float("nan"), "p99_ms": float("nan")}
    quantiles = statistics.quantiles(latencies, n=100)
    return {"events": len(latencies), "p50_ms": quantiles[49], "p99_ms": quantiles[98],
            "max_ms": latencies[-1]}


def warm_up(producer: Producer, topics: Topics, consumed_at: dict) -> None:
    """Start the clock once the pipeline answers: one event on every input partition, through to the reader.

    The worker process and the reader join their groups, look their offsets up and send their first
    fetches in the first second or so; events sent meanwhile measure that start-up, not the
    processor (they all came out together, 0.5 s after the first was sent). These warm-up events
    are not counted.
    """
    events = iter([*web_events(3, seed=7, bad_ratio=0), *purchase_events(3, seed=7, bad_ratio=0)])
    for topic in (topics.web, topics.purchase):
        for partition in range(3):
            event = next(events)
            producer.produce(topic, value=event.value, key=event.key, partition=partition)
    producer.flush(30)
    deadline = time.monotonic() + 60
    while len(consumed_at) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    if len(consumed_at) < 6:
        raise SystemExit(f"the pipeline did not answer within 60 s ({len(consumed_at)} of 6 warm-up events came out)")
    consumed_at.clear()


def naive_worker(run: str, contender: str) -> None:
    topics = Topics(run, contender)
    naive_loop(topics, build_transform(topics), flush_each=contender == "naive",
               stop=lambda n: False, idle_timeout=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "naive-worker"])
    parser.add_argument("--events", type=int, default=40_000, help="backlog for the throughput run")
    parser.add_argument("--naive-budget", type=float, default=15.0,
                        help="seconds the naive loop gets on the backlog (it is slow)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="events/s of the latency run (below the naive loop's capacity)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "naive-worker":
        naive_worker(args.run, args.contender)
        return

    run = uuid.uuid4().hex[:8]
    print(f"stream processor benchmark, run {run}: analytics transform, 3 partitions per topic, "
          f"{BAD_RATIO:.0%} bad events, broker {BOOTSTRAP}, {os.cpu_count()} CPUs")
    print(f"\nthroughput on a backlog of {args.events} events (records/s, first to last record):")
    rates = throughput(run, args.events, args.naive_budget)
    for name, value in rates.items():
        print(f"  {name:32s} {value:10,.0f}")
    print(f"\nend-to-end latency at {args.rate:.0f} events/s for {args.seconds:.0f} s "
          "(input CreateTime -> analytics event consumed, read_committed):")
    results = {}
    for contender, name in (("eos", "exactly-once, checkpoint 0.1s"),
                            ("naive", "naive loop (flush per record)")):
        results[contender] = latency(run, contender, args.rate, args.seconds)
        r = results[contender]
        print(f"  {name:32s} p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms   "
              f"max {r.get('max_ms', float('nan')):7.1f} ms   ({r['events']} events)")
    print("\n" + json.dumps({"throughput_records_per_s": {k: round(v) for k, v in rates.items()},
                             "latency_ms": {k: {m: round(v, 1) for m, v in r.items()}
                                            for k, r in results.items()}}))


if __name__ == "__main__":
    main()
