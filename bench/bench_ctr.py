"""Benchmark of the Flink CTR job: records/s and end-to-end latency, against DuckDB over the same rows.

    . scripts/local-env.sh && .venv/bin/python bench/bench_ctr.py [--rows 500000] [--hours 6] [--latency-seconds 180]

On a Flink session cluster of its own (devstack.flink, free ports, state in a temporary folder),
a topic and a PostgreSQL schema of its own, against the local stack's broker, registry and
PostgreSQL ($KAFKA_BOOTSTRAP_SERVERS, $SCHEMA_REGISTRY_URL, $POSTGRES_URL), in one run:

- ``flink``: ``--rows`` generated rows over ``--hours`` Avazu hours are ingested (HourlyIngestor,
  as Airflow does) before the job starts; rows/s runs from the first record its sources read to
  the last (each of its two sources reads every record; REST metrics every 2 s, so short runs
  read low). The job is flink/ctr_job.py as shipped (checkpoints every 10 s), parallelism 2.
- ``duckdb``: the same hourly aggregates (the job's grouping sets) from the same rows - the
  generated file - in DuckDB; rows/s, and whether they equal ctr_hourly for every closed hour.
- latency: while the job runs, a small hour of ``--batch-rows`` rows is ingested every
  ``--interval`` seconds for ``--latency-seconds``. A record's latency runs from its transaction's
  commit (the ingest call's return; one chunk, one transaction per hour) to the first moment its
  arrival minute is visible in ctr_minute (polled every 0.25 s). A minute is written once it has
  closed, 5 s (the minute lateness) after its end, so a record waits for the rest of its minute
  first: "after close" is the part the pipeline adds (minute end -> visible).

The last line is JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIMENSIONS = ("site_id", "app_id", "device_type", "banner_pos")


def duckdb_hourly(path: Path):
    """(rows, aggregates) of the generated file, as the job groups them: {(hour, dimension, value): (impressions, clicks)}."""
    import duckdb

    dimension = " ".join(f"WHEN GROUPING({d}) = 0 THEN '{d}'" for d in DIMENSIONS)
    value = " ".join(f"WHEN GROUPING({d}) = 0 THEN COALESCE(CAST({d} AS VARCHAR), '')" for d in DIMENSIONS)
    sets = ", ".join(["(hour)", *(f"(hour, {d})" for d in DIMENSIONS)])
    connection = duckdb.connect()
    connection.execute("SET threads TO 2")
    connection.execute(f"""
        CREATE TABLE events AS SELECT strptime(CAST(hour AS VARCHAR), '%y%m%d%H') AS hour, CAST(click AS INTEGER) AS click,
               site_id, app_id, CAST(device_type AS INTEGER) AS device_type, CAST(banner_pos AS INTEGER) AS banner_pos
        FROM read_csv('{path}', header = true, all_varchar = true)""")
    rows = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    found = connection.execute(f"""
        SELECT hour, CASE {dimension} ELSE 'all' END, CASE {value} ELSE '' END, count(*), sum(click)
        FROM events GROUP BY GROUPING SETS ({sets})""").fetchall()
    return rows, {(h, d, v): (int(i), int(c)) for h, d, v, i, c in found}


def quantiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive")  # never beyond the values measured
    return {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000, help="rows of the throughput run")
    parser.add_argument("--hours", type=int, default=6, help="Avazu hours they span")
    parser.add_argument("--latency-seconds", type=float, default=180.0)
    parser.add_argument("--batch-rows", type=int, default=3_000, help="rows of each small hour in the latency run")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between the latency run's hours")
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args()
    postgres_url = os.environ.get("POSTGRES_URL")
    if not postgres_url:
        raise SystemExit("POSTGRES_URL is not set: run `make stack-start`, then `. scripts/local-env.sh`")

    import psycopg
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from psycopg import sql

    from devstack import probes
    from devstack.flink import FlinkCluster, FlinkSettings, job_jars, submit
    from devstack.stack import StackSettings
    from include.avazu.generator import AVAZU_HOURS, GeneratorSpec, generate
    from include.ctr.flink_rest import FlinkRestClient
    from include.ctr.migrate import migrate
    from include.dead_letters import Origin
    from include.ingest.config import IngestTopics, load_ingest_config
    from include.ingest.ingestor import HourlyIngestor
    from include.ingest.staging import find_partition, stage_source
    from include.ingest.topics import provision_ingest_topics
    from include.kafka.reader import read_to_end, reader_config
    from include.kafka.registry import registry_client

    kafka = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}
    registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
    registry = registry_client(registry_url)
    run = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="bench-ctr-"))
    batches = math.ceil(args.latency_seconds / args.interval)
    first = AVAZU_HOURS.index(14102100)
    throughput_hours = AVAZU_HOURS[first:first + args.hours]
    latency_hours = AVAZU_HOURS[first + args.hours:first + args.hours + batches + 1]  # + the tail hour
    print(f"CTR job benchmark, run {run}: {args.rows:,} rows over {args.hours} hours, then {batches} hours of "
          f"{args.batch_rows:,} rows every {args.interval:.0f} s; broker {kafka['bootstrap.servers']}, "
          f"{os.cpu_count()} CPUs", flush=True)

    generate(GeneratorSpec(args.rows, start_hour=throughput_hours[0], hours=len(throughput_hours), seed=5),
             work / "throughput.csv.gz")
    generate(GeneratorSpec(args.batch_rows * len(latency_hours), start_hour=latency_hours[0],
                           hours=len(latency_hours), seed=6), work / "latency.csv.gz")
    stage_source(str(work / "throughput.csv.gz"), str(work / "staging-throughput"))
    stage_source(str(work / "latency.csv.gz"), str(work / "staging-latency"))

    schema = f"bench_ctr_{run}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(postgres_url, options=f"-c search_path={schema}") as connection:
        migrate(connection)
    topics = IngestTopics(f"bench_ctr_raw_{run}", f"bench_ctr_dlq_{run}", f"bench_ctr_ckpt_{run}")
    provision_ingest_topics(AdminClient(kafka), registry, topics)
    config = load_ingest_config().with_topics(topics)
    origin = Origin("bench_ctr", f"bench__{run}", "ingest_hour", 1)

    def ingest(staging: str, hour: int) -> int:
        return HourlyIngestor(find_partition(staging, hour), config=config, kafka_config=kafka, registry=registry,
                              origin=origin).run().rows_produced

    rest_port, rpc_port = probes.free_ports(2)
    settings = FlinkSettings(stack=StackSettings(home=work / "devstack"), rest_port=rest_port, rpc_port=rpc_port)
    cluster = FlinkCluster(settings)
    rest = FlinkRestClient(settings.rest_url)
    figures: dict = {"rows": args.rows}
    try:
        began = time.monotonic()
        job_jars(settings)
        cluster.start(echo=lambda line: None)
        figures["cluster_start_s"] = round(time.monotonic() - began, 1)

        began = time.monotonic()
        produced = sum(ingest(str(work / "staging-throughput"), hour) for hour in throughput_hours)
        assert produced == args.rows, f"{produced} rows produced of {args.rows}"
        figures["ingest_rows_per_s"] = round(produced / (time.monotonic() - began))

        began = time.monotonic()
        job_id = submit(settings, ["--topic", topics.raw, "--schema", schema, "--group-id", f"bench_ctr_{run}",
                                   "--parallelism", str(args.parallelism), "--name", f"bench-ctr-{run}"],
                        postgres_url=postgres_url)
        figures["submit_s"] = round(time.monotonic() - began, 1)
        first_read = last_read = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            metrics = rest.metrics(job_id)
            counts = [s.records_in for s in metrics.sources]
            now = time.monotonic()
            if first_read is None and counts and max(counts) > 0:
                first_read = now
            if len(counts) == 2 and min(counts) >= produced:
                last_read = now
                break
            time.sleep(0.25)
        if first_read is None or last_read is None:
            raise SystemExit(f"the job did not read the {produced:,} rows within 15 minutes")
        figures["flink_rows_per_s"] = round(produced / max(last_read - first_read, 1e-3))
        figures["flink_records_per_s"] = 2 * figures["flink_rows_per_s"]  # two sources read every row
        print(f"\nflink:  {produced:,} rows read by both sources in {last_read - first_read:.1f} s: "
              f"{figures['flink_rows_per_s']:,} rows/s (submit {figures['submit_s']} s)", flush=True)

        began = time.monotonic()
        duck_rows, duck = duckdb_hourly(work / "throughput.csv.gz")
        duck_s = time.monotonic() - began
        figures["duckdb_rows_per_s"] = round(duck_rows / duck_s)
        figures["duckdb_over_flink"] = round(figures["duckdb_rows_per_s"] / figures["flink_rows_per_s"], 1)
        print(f"duckdb: {duck_rows:,} rows aggregated in {duck_s:.2f} s: {figures['duckdb_rows_per_s']:,} rows/s "
              f"({figures['duckdb_over_flink']}x the job)", flush=True)

        # The hour watermark is an hour behind the newest hour: all but the last two hours have closed.
        closed = {dt.datetime.strptime(str(h), "%y%m%d%H") for h in throughput_hours[:-2]}

        def stream_hourly() -> dict:
            with psycopg.connect(postgres_url, options=f"-c search_path={schema}") as connection:
                rows = connection.execute("SELECT hour, dimension, value, impressions, clicks FROM ctr_hourly").fetchall()
            return {(h, d, v): (i, c) for h, d, v, i, c in rows}

        want = {key: value for key, value in duck.items() if key[0] in closed}
        deadline = time.monotonic() + 120
        while (got := stream_hourly()) != want and time.monotonic() < deadline:
            time.sleep(1)
        figures["hourly_equal_to_duckdb"] = got == want
        figures["closed_hours_compared"] = len(closed)
        print(f"ctr_hourly = DuckDB for the {len(closed)} closed hours ({len(want):,} rows): {got == want}", flush=True)

        # Latency: one small hour every interval, a poller noting when each minute appears.
        visible: dict[dt.datetime, float] = {}
        polling = threading.Event()
        polling.set()

        def poll() -> None:
            with psycopg.connect(postgres_url, options=f"-c search_path={schema}", autocommit=True) as connection:
                while polling.is_set():
                    now = time.time()
                    for (minute,) in connection.execute("SELECT minute FROM ctr_minute WHERE dimension = 'all'"):
                        visible.setdefault(minute, now)
                    time.sleep(0.25)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        committed: list[tuple[float, float]] = []  # (started, committed) per hour
        for hour in latency_hours[:-1]:
            started = time.time()
            ingest(str(work / "staging-latency"), hour)
            committed.append((started, time.time()))
            time.sleep(max(0.0, started + args.interval - time.time()))
        # A last hour in a later minute closes the last measured minute; it is not measured.
        time.sleep(max(0.0, (committed[-1][1] // 60 + 1) * 60 + 6 - time.time()))
        ingest(str(work / "staging-latency"), latency_hours[-1])

        consumer = Consumer(reader_config(kafka, f"bench-ctr-{run}"))
        try:
            stamps = [m.timestamp()[1] / 1000 for m in read_to_end(consumer, [topics.raw], commit=False, batch=10_000)]
        finally:
            consumer.close()
        measured = [(t, next(c for s, c in reversed(committed) if s <= t)) for t in stamps
                    if committed[0][0] <= t <= committed[-1][1]]
        minutes = {dt.datetime.fromtimestamp(t // 60 * 60, dt.timezone.utc).replace(tzinfo=None) for t, _ in measured}
        deadline = time.monotonic() + 120
        while not minutes <= visible.keys() and time.monotonic() < deadline:
            time.sleep(0.5)
        polling.clear()
        poller.join(10)
        missing = minutes - visible.keys()
        if missing:
            raise SystemExit(f"{len(missing)} measured minute(s) never reached ctr_minute: {sorted(missing)}")

        def seen(t: float) -> float:
            return visible[dt.datetime.fromtimestamp(t // 60 * 60, dt.timezone.utc).replace(tzinfo=None)]

        latency = [seen(t) - c for t, c in measured]
        after_close = [visible[m] - (m.replace(tzinfo=dt.timezone.utc).timestamp() + 60) for m in minutes]
        per_minute: dict[dt.datetime, int] = {}
        for t, _ in measured:
            minute = dt.datetime.fromtimestamp(t // 60 * 60, dt.timezone.utc).replace(tzinfo=None)
            per_minute[minute] = per_minute.get(minute, 0) + 1
        print("\nminute (UTC)   records  visible after its end")
        for minute in sorted(per_minute):
            print(f"  {minute:%H:%M}   {per_minute[minute]:>9,}  {visible[minute] - minute.replace(tzinfo=dt.timezone.utc).timestamp() - 60:6.1f} s")
        figures["latency_records"] = len(latency)
        figures["latency_s"] = quantiles(latency)
        figures["after_minute_close_s"] = quantiles(after_close)
        print(f"\nend-to-end latency of {len(latency):,} records in {len(minutes)} minutes (commit -> minute visible "
              f"in ctr_minute): p50 {figures['latency_s']['p50']} s, p99 {figures['latency_s']['p99']} s, "
              f"max {figures['latency_s']['max']} s", flush=True)
        print(f"  of which after the minute's end (lateness 5 s, firing, the sink's flush): "
              f"p50 {figures['after_minute_close_s']['p50']} s, max {figures['after_minute_close_s']['max']} s")
    finally:
        for job in rest.jobs() if cluster.processes[0].pid() else []:
            if job.state == "RUNNING":
                rest.cancel(job.id)
        cluster.stop(echo=lambda line: None)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + json.dumps(figures))


if __name__ == "__main__":
    main()
