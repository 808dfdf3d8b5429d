"""The whole Avazu data set end to end: 40.4M rows over 240 hours, staged and ingested hour by hour.

    . scripts/local-env.sh && .venv/bin/python bench/bench_full_scale.py [--source train.gz] [--rows 40428967]

Without ``--source`` it generates an Avazu-format gzip file of the real data set's size (kept in
``--workdir``, so a second run skips it); with ``--source`` it takes that file, e.g. the real
``train.gz``. Then, each phase in a child process of its own so that its peak memory is its own
(``os.wait4`` rusage), against the local broker and registry:

* ``stage``  - include.ingest.staging: one pass over the file into 240 hour partitions;
* ``ingest`` - include.ingest: every staged hour, one after the other (one task's work), through
  ``HourlyIngestor`` into sandbox topics: exactly once, DLQ, checkpoints, counts reconciled;
* ``ceiling`` - the baseline in the same run: librdkafka producing the same Avro payloads with the
  same settings and transaction cadence in a tight loop (bench/bench_ingest.py's), over the first
  ``--ceiling-rows`` rows: how fast a Python producer can go here at all.

It prints wall time, rows/s and peak RSS per phase, the broker's disk use for the sandbox topics,
every row accounted for (read = produced + dead-lettered), the targets (stage + ingest under
4 minutes on two cores, peak memory of any phase under 1 GB), and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_ingest  # noqa: E402  (the ingestion bench's children, sandbox and yardstick)

AVAZU_ROWS = 40_428_967
AVAZU_HOURS = 240
TARGET_STAGE_AND_INGEST_S = 240.0
TARGET_PEAK_RSS_MB = 1024.0


def _child_stage(options: dict) -> dict:
    from include.ingest.staging import stage_source

    result = stage_source(options["source"], options["staging"], force=True, progress_every_s=30)
    return {"rows": result.rows, "bad_rows": result.bad_rows, "hours": result.hours, "seconds": result.elapsed_s}


def _broker_disk_mb(topics: list[str]) -> float:
    """Bytes on the local broker's disk under the given topics' partition folders."""
    home = Path(os.environ.get("DEVSTACK_HOME") or ROOT / ".devstack")
    data = home / "kafka" / "data"
    total = 0
    for folder in data.iterdir() if data.is_dir() else []:
        if folder.is_dir() and folder.name.rsplit("-", 1)[0] in topics:
            total += sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return total / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="an Avazu train.gz (default: generate one of --rows rows)")
    parser.add_argument("--rows", type=int, default=AVAZU_ROWS)
    parser.add_argument("--hours", type=int, default=AVAZU_HOURS)
    parser.add_argument("--ceiling-rows", type=int, default=4_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avazu-full-scale-bench"))
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child_stage(json.loads(args.child[1])), default=str))
        return 0

    from confluent_kafka.admin import AdminClient

    from include.encoding.rows import load_ad_event_schema
    from include.ingest.config import IngestTopics
    from include.ingest.topics import provision_ingest_topics
    from include.kafka.registry import lookup_schema_id

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine speed: sum(range(10**7)) takes {bench_ingest._calibration_s():.2f} s here; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    began = time.monotonic()
    source = args.source or bench_ingest._source(args.workdir, args.rows, args.hours)
    generate_s = time.monotonic() - began
    print(f"source: {source} ({source.stat().st_size / 1e9:.2f} GB)")

    staging = args.workdir / f"staging_{source.stem}"
    stage = _run_self("stage", {"source": str(source), "staging": str(staging)})
    print(f"stage: {stage['rows']:,} rows ({stage['bad_rows']:,} bad) into {stage['hours']} hours in "
          f"{stage['seconds']:.1f} s, {stage['rows_per_s']:,.0f} rows/s, peak RSS {stage['peak_rss_mb']:.0f} MB")

    admin, registry = AdminClient(bench_ingest._kafka_config()), bench_ingest._registry()
    run = uuid.uuid4().hex[:8]
    created: list[str] = []

    def sandbox(name: str) -> IngestTopics:
        topics = IngestTopics(f"bench_full_{name}_raw_{run}", f"bench_full_{name}_dlq_{run}",
                              f"bench_full_{name}_ckpt_{run}")
        provision_ingest_topics(admin, registry, topics)
        created.extend(topics.as_dict().values())
        return topics

    common = {"staging": str(staging), "chunk_rows": args.chunk_rows}
    try:
        topics = sandbox("ingest")
        ingest = bench_ingest._run_child("ingest", {**common, "topics": topics.as_dict()})
        disk_mb = _broker_disk_mb(list(topics.as_dict().values()))
        print(f"ingest: {ingest['hours']} hours, {ingest['chunks']} chunks, {ingest['rows']:,} rows read = "
              f"{ingest['produced']:,} produced + {ingest['dead_lettered']:,} dead-lettered in {ingest['wall_s']:.1f} s "
              f"({ingest['seconds']:.1f} s in the ingestors), {ingest['rows'] / ingest['wall_s']:,.0f} rows/s, peak RSS "
              f"{ingest['peak_rss_mb']:.0f} MB; broker disk for its topics {disk_mb:,.0f} MB")
        ceiling_topics = sandbox("ceiling")
        schema_id = lookup_schema_id(registry, f"{ceiling_topics.raw}-value", load_ad_event_schema())
        ceiling = bench_ingest._run_child("ceiling", {**common, "topic": ceiling_topics.raw,
                                                      "rows": min(args.ceiling_rows, stage["rows"]),
                                                      "schema_id": schema_id})
    finally:
        if not args.keep_topics:
            bench_ingest.delete_topics(admin, created)

    assert ingest["rows"] == stage["rows"] == ingest["produced"] + ingest["dead_lettered"], (ingest, stage)
    ingest_rate = ingest["rows"] / ingest["wall_s"]
    both = stage["wall_s"] + ingest["wall_s"]
    peak = max(stage["peak_rss_mb"], ingest["peak_rss_mb"])
    print(f"\nphase       seconds      rows/s  peak RSS MB")
    print(f"stage    {stage['wall_s']:>10.1f} {stage['rows'] / stage['wall_s']:>11,.0f} {stage['peak_rss_mb']:>12.0f}")
    print(f"ingest   {ingest['wall_s']:>10.1f} {ingest_rate:>11,.0f} {ingest['peak_rss_mb']:>12.0f}")
    print(f"ceiling  {ceiling['seconds']:>10.1f} {ceiling['rows_per_s']:>11,.0f} {ceiling['peak_rss_mb']:>12.0f}"
          f"   (librdkafka, pre-encoded, first {ceiling['rows']:,} rows)")
    print(f"ingest / ceiling = {ingest_rate / ceiling['rows_per_s']:.2f}")
    print(f"stage + ingest: {both:.0f} s (target {TARGET_STAGE_AND_INGEST_S:.0f} s: "
          f"{'met' if both <= TARGET_STAGE_AND_INGEST_S else 'MISSED'}); peak memory of a phase {peak:.0f} MB "
          f"(target {TARGET_PEAK_RSS_MB:.0f} MB: {'met' if peak <= TARGET_PEAK_RSS_MB else 'MISSED'})")
    print(json.dumps({"rows": stage["rows"], "hours": stage["hours"], "bad_rows": stage["bad_rows"],
                      "generate_s": round(generate_s, 1), "stage_s": round(stage["wall_s"], 1),
                      "stage_rows_per_s": round(stage["rows"] / stage["wall_s"]),
                      "stage_peak_rss_mb": round(stage["peak_rss_mb"]), "ingest_s": round(ingest["wall_s"], 1),
                      "ingest_rows_per_s": round(ingest_rate), "ingest_peak_rss_mb": round(ingest["peak_rss_mb"]),
                      "produced": ingest["produced"], "dead_lettered": ingest["dead_lettered"],
                      "broker_disk_mb": round(disk_mb), "ceiling_rows_per_s": round(ceiling["rows_per_s"]),
                      "ingest_to_ceiling": round(ingest_rate / ceiling["rows_per_s"], 2),
                      "stage_and_ingest_s": round(both, 1)}))
    return 0


def _run_self(mode: str, options: dict) -> dict:
    """One phase in a child process of this script: its figures, wall time and peak RSS."""
    import subprocess

    started = time.monotonic()
    child = subprocess.Popen([sys.executable, __file__, "--child", mode, json.dumps(options)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    output = child.stdout.read()
    child.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} failed with exit status {os.waitstatus_to_exitcode(status)}")
    result = json.loads(output.strip().splitlines()[-1])
    result["wall_s"] = time.monotonic() - started
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["rows_per_s"] = result["rows"] / result["wall_s"]
    return result


if __name__ == "__main__":
    sys.exit(main())
