"""The whole Avazu data set end to end: 40.4M rows over 240 hours, staged and ingested hour by hour.

    . scripts/local-env.sh && .venv/bin/python bench/bench_full_scale.py [--source train.gz] [--rows 40428967]

Without ``--source`` it generates an Avazu-format gzip file of the real data set's size (kept in
``--workdir``, so a second run skips it); with ``--source`` it takes that file, e.g. the real
``train.gz``. Then, each phase in a child process of its own so that its peak memory is its own
(``os.wait4`` rusage), against the local broker and registry:

* ``stage``  - include.ingest.staging: one pass over the file into 240 hour partitions;
* ``ingest`` - include.ingest: every staged hour, one after the other (one task's work), through
  ``HourlyIngestor`` into sandbox topics: exactly once, DLQ, checkpoints, counts reconciled;
* ``health`` (with ``ingest``) - pipeline_health's two checks of the ingested hours, in-process
  (include.health.hours): ``dlq_ratio`` from the hours' checkpoints, and ``reconciliation``, which
  counts every hour's records in the raw topic and the DLQ against the rows its ingestion read and
  its staged manifest;
* ``ceiling`` - the baseline in the same run: librdkafka producing the same Avro payloads with the
  same settings and transaction cadence in a tight loop (bench/bench_ingest.py's), over the first
  ``--ceiling-rows`` rows: how fast a Python producer can go here at all;
* ``airflow`` (``--phases stage,airflow``) - the same hours as a real Airflow backfill of
  ``avazu_hourly_ingest`` into sandbox topics, on an Airflow of its own started the way
  `make airflow` starts it (the scheduler, the LocalExecutor with ``--parallelism`` slots, at most
  ``--max-active-runs`` runs at a time, its metadata in a PostgreSQL database of its own on the
  stack's, as Airflow wants for a backfill this size; pipeline_health paused meanwhile), timed
  from the backfill's creation until Airflow marks it complete, with where each task's time went:
  waiting for a slot (scheduled -> queued), starting (queued -> running) and running, and how much
  of the running was the ingestion's own work (its ``duration_s``). Then a pipeline_health run is
  triggered over those hours and timed check by check: the reconciliation counts every hour's
  records in Kafka against its staged rows, so a green run says every row is there once. The
  Airflow home (its logs) is kept with ``--keep-topics``, removed otherwise.

It prints wall time, rows/s and peak RSS per phase, the broker's disk use for the sandbox topics,
every row accounted for (read = produced + dead-lettered), the targets (stage + ingest under
4 minutes on two cores, peak memory of any phase under 1 GB; the backfill under 15 minutes,
pipeline_health over it under a minute), and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
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
TARGET_BACKFILL_S = 900.0
TARGET_HEALTH_S = 60.0
PHASES = ("stage", "ingest", "ceiling", "health", "airflow")


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
    parser.add_argument("--phases", default="stage,ingest,ceiling",
                        help=f"comma-separated, of {', '.join(PHASES)} (stage always runs: the others read its hours)")
    parser.add_argument("--parallelism", type=int, default=8, help="airflow: the LocalExecutor's task slots")
    parser.add_argument("--max-active-runs", type=int, default=8, help="airflow: backfill runs at a time")
    parser.add_argument("--metadata", choices=("postgres", "sqlite"), default="postgres",
                        help="airflow: its metadata database (postgres: one of its own on the stack's PostgreSQL)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = {"stage": _child_stage, "health": _child_health}[args.child[0]]
        print(json.dumps(child(json.loads(args.child[1])), default=str))
        return 0

    phases = {phase.strip() for phase in args.phases.split(",") if phase.strip()} | {"stage"}
    if phases - set(PHASES):
        parser.error(f"unknown phase(s) {', '.join(sorted(phases - set(PHASES)))}; choose from {', '.join(PHASES)}")
    if "health" in phases and "ingest" not in phases:
        parser.error("the health phase checks the hours the ingest phase wrote: add ingest to --phases")
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
    figures = {"rows": stage["rows"], "hours": stage["hours"], "bad_rows": stage["bad_rows"],
               "generate_s": round(generate_s, 1), "stage_s": round(stage["wall_s"], 1),
               "stage_rows_per_s": round(stage["rows"] / stage["wall_s"]),
               "stage_peak_rss_mb": round(stage["peak_rss_mb"])}
    if phases & {"ingest", "ceiling"}:
        figures.update(_ingest_and_ceiling(args, phases, staging, stage))
    if "airflow" in phases:
        figures.update(_airflow(args, source, staging, stage))
    print(json.dumps(figures))
    return 0


def _ingest_and_ceiling(args: argparse.Namespace, phases: set[str], staging: Path, stage: dict) -> dict:
    """Every staged hour through the ingestion in one process, and the librdkafka ceiling beside it."""
    from confluent_kafka.admin import AdminClient

    from include.encoding.rows import load_ad_event_schema
    from include.ingest.config import IngestTopics
    from include.ingest.topics import provision_ingest_topics
    from include.kafka.registry import lookup_schema_id

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
    figures: dict = {}
    ingest = ceiling = None
    try:
        if "ingest" in phases:
            topics = sandbox("ingest")
            ingest = bench_ingest._run_child("ingest", {**common, "topics": topics.as_dict()})
            disk_mb = _broker_disk_mb(list(topics.as_dict().values()))
            print(f"ingest: {ingest['hours']} hours, {ingest['chunks']} chunks, {ingest['rows']:,} rows read = "
                  f"{ingest['produced']:,} produced + {ingest['dead_lettered']:,} dead-lettered in {ingest['wall_s']:.1f} s "
                  f"({ingest['seconds']:.1f} s in the ingestors), {ingest['rows'] / ingest['wall_s']:,.0f} rows/s, peak RSS "
                  f"{ingest['peak_rss_mb']:.0f} MB; broker disk for its topics {disk_mb:,.0f} MB")
            assert ingest["rows"] == stage["rows"] == ingest["produced"] + ingest["dead_lettered"], (ingest, stage)
            figures.update(ingest_s=round(ingest["wall_s"], 1), ingest_rows_per_s=round(ingest["rows"] / ingest["wall_s"]),
                           ingest_peak_rss_mb=round(ingest["peak_rss_mb"]), produced=ingest["produced"],
                           dead_lettered=ingest["dead_lettered"], broker_disk_mb=round(disk_mb))
            if "health" in phases:
                figures.update(_health_of(topics, staging, ingest))
        if "ceiling" in phases:
            ceiling_topics = sandbox("ceiling")
            schema_id = lookup_schema_id(registry, f"{ceiling_topics.raw}-value", load_ad_event_schema())
            ceiling = bench_ingest._run_child("ceiling", {**common, "topic": ceiling_topics.raw,
                                                          "rows": min(args.ceiling_rows, stage["rows"]),
                                                          "schema_id": schema_id})
            figures["ceiling_rows_per_s"] = round(ceiling["rows_per_s"])
    finally:
        if not args.keep_topics:
            bench_ingest.delete_topics(admin, created)

    print("\nphase       seconds      rows/s  peak RSS MB")
    print(f"stage    {stage['wall_s']:>10.1f} {stage['rows'] / stage['wall_s']:>11,.0f} {stage['peak_rss_mb']:>12.0f}")
    if ingest:
        print(f"ingest   {ingest['wall_s']:>10.1f} {ingest['rows'] / ingest['wall_s']:>11,.0f} {ingest['peak_rss_mb']:>12.0f}")
    if ceiling:
        print(f"ceiling  {ceiling['seconds']:>10.1f} {ceiling['rows_per_s']:>11,.0f} {ceiling['peak_rss_mb']:>12.0f}"
              f"   (librdkafka, pre-encoded, first {ceiling['rows']:,} rows)")
    if ingest and ceiling:
        figures["ingest_to_ceiling"] = round(figures["ingest_rows_per_s"] / ceiling["rows_per_s"], 2)
        print(f"ingest / ceiling = {figures['ingest_to_ceiling']:.2f}")
    if ingest:
        both = stage["wall_s"] + ingest["wall_s"]
        peak = max(stage["peak_rss_mb"], ingest["peak_rss_mb"])
        figures["stage_and_ingest_s"] = round(both, 1)
        print(f"stage + ingest: {both:.0f} s (target {TARGET_STAGE_AND_INGEST_S:.0f} s: "
              f"{'met' if both <= TARGET_STAGE_AND_INGEST_S else 'MISSED'}); peak memory of a phase {peak:.0f} MB "
              f"(target {TARGET_PEAK_RSS_MB:.0f} MB: {'met' if peak <= TARGET_PEAK_RSS_MB else 'MISSED'})")
    return figures


def _child_health(options: dict) -> dict:
    import logging
    import tempfile

    from include.health.checks import HealthInputs
    from include.health.config import load_health_config
    from include.health.hours import check_dlq_ratio, check_reconciliation
    from include.ingest.config import IngestTopics, load_ingest_config
    from include.kafka_admin.sandbox import sandbox_catalog

    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("include").setLevel(logging.INFO)  # the count's progress lines, not each registry call
    topics = IngestTopics(**options["topics"])
    ingest = load_ingest_config().with_topics(topics).replace("bench", staging_uri=options["staging"])
    with tempfile.TemporaryDirectory(prefix="bench-full-health-") as work:
        health = load_health_config().replace(state_uri=f"{work}/state.json", report_uri=f"{work}/reports")
        inputs = HealthInputs(config=health, kafka_config=bench_ingest._kafka_config(), registry=bench_ingest._registry(),
                              ingest=ingest, catalog=sandbox_catalog({"raw": topics.raw}))
        figures: dict = {}
        for name, check in (("dlq_ratio", check_dlq_ratio), ("reconciliation", check_reconciliation)):
            inputs.cache.clear()  # each reads the hours' checkpoints itself, as each check's task does
            began = time.monotonic()
            outcome = check(inputs)
            figures[name] = {"ok": outcome.ok, "seconds": round(time.monotonic() - began, 1), "summary": outcome.summary,
                             "hours": len({row["hour"] for row in outcome.rows})}
    # The records the reconciliation found in Kafka (raw + DLQ), every hour's.
    figures["rows"] = sum(row["raw"] + row["dlq"] for row in outcome.rows)
    return figures


def _health_of(topics, staging: Path, ingest: dict) -> dict:
    """pipeline_health's dlq_ratio and reconciliation over the ingested hours, in a child process."""
    health = _run_self("health", {"topics": topics.as_dict(), "staging": str(staging)})
    reconciliation, dlq_ratio = health["reconciliation"], health["dlq_ratio"]
    print(f"health: dlq_ratio {'pass' if dlq_ratio['ok'] else 'FAIL'} in {dlq_ratio['seconds']:.1f} s "
          f"({dlq_ratio['summary'][:100]})")
    print(f"health: reconciliation {'pass' if reconciliation['ok'] else 'FAIL'} over {reconciliation['hours']} hours in "
          f"{reconciliation['seconds']:.1f} s, {health['rows'] / reconciliation['seconds']:,.0f} records/s "
          f"(target {TARGET_HEALTH_S:.0f} s: {'met' if reconciliation['seconds'] <= TARGET_HEALTH_S else 'MISSED'}), "
          f"peak RSS {health['peak_rss_mb']:.0f} MB: {reconciliation['summary'][:120]}")
    assert reconciliation["ok"] and health["rows"] == ingest["rows"], (health, ingest["rows"])
    return {"health_reconciliation_s": reconciliation["seconds"], "health_dlq_ratio_s": dlq_ratio["seconds"],
            "health_records_per_s": round(health["rows"] / reconciliation["seconds"]),
            "health_peak_rss_mb": round(health["peak_rss_mb"])}


class _PeakMemory:
    """The highest peak RSS (VmHWM) of any process of an Airflow home, sampled a few times a second."""

    def __init__(self, home: Path, every_s: float = 0.25):
        import threading

        self.home, self.every_s = home, every_s
        self.peak_mb, self.peak_of = 0.0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "_PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        from tests.local_airflow import leftover_processes

        while not self._stop.wait(self.every_s):
            for pid in leftover_processes(self.home):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
                    if hwm / 1024 > self.peak_mb:
                        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                        self.peak_mb, self.peak_of = hwm / 1024, command.strip()[:120]
                except (OSError, StopIteration, ValueError):
                    continue  # the process ended between the listing and the reading


def _airflow(args: argparse.Namespace, source: Path, staging: Path, stage: dict) -> dict:
    """The staged hours as a real Airflow backfill of avazu_hourly_ingest, then pipeline_health over them."""
    import shutil
    import tempfile
    from datetime import datetime, timezone

    import yaml
    from confluent_kafka.admin import AdminClient

    from tests.local_airflow import INGEST_ROLES, LocalAirflow, ingest_settings, metadata_database

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per API call would bury the figures

    dag_id, first_hour = "avazu_hourly_ingest", datetime(2014, 10, 21, tzinfo=timezone.utc)
    kafka = bench_ingest._kafka_config()
    registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
    home = Path(tempfile.mkdtemp(prefix="airflow-", dir=args.workdir))
    config_dir, topics = ingest_settings(home / "config", kafka, registry_url, source, staging)
    health = yaml.safe_load((config_dir / "health.yaml").read_text())
    health["report_uri"] = str(home / "reports")  # never the project's own reports folder
    (config_dir / "health.yaml").write_text(yaml.safe_dump(health))
    wiring = {"AVAZU_CONFIG_DIR": str(config_dir), "AIRFLOW_PARALLELISM": str(args.parallelism),
              "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    database = None
    if args.metadata == "postgres":
        # Airflow refuses a backfill of 240 runs on SQLite while its scheduler writes (503 "Database is
        # locked ... Please use PostgreSQL"): a metadata database of its own on the stack's PostgreSQL.
        from devstack import Stack

        database = metadata_database(Stack(), prefix="airflow_bench")
        wiring["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database.url
    airflow = LocalAirflow(home / "airflow", wiring)
    hours = stage["hours"]
    try:
        api = airflow.start()
        print(f"airflow: started in {airflow.started_in:.1f} s ({home}, metadata on {args.metadata}, LocalExecutor); "
              f"backfilling {hours} hours, "
              f"{args.max_active_runs} runs at a time, {args.parallelism} task slots ...", flush=True)
        api.wait_until_parsed(dag_id, "pipeline_health")
        api.unpause(dag_id)
        began = time.monotonic()
        last_report = [began]

        def alive_and_reported() -> None:
            """The services still run; a line of progress a minute (runs done, the machine's load)."""
            airflow.check_alive()
            if time.monotonic() - last_report[0] >= 60:
                last_report[0] = time.monotonic()
                done = [r for r in api.get_all(f"/dags/{dag_id}/dagRuns", "dag_runs", run_type="backfill")
                        if r["state"] == "success"]
                print(f"airflow: {len(done)} of {hours} runs done after {time.monotonic() - began:.0f} s "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)

        with _PeakMemory(home / "airflow") as memory:
            runs = api.backfill(dag_id, first_hour, hours, args.max_active_runs, timeout=4 * 3600,
                                check_alive=alive_and_reported)
        backfill_s = time.monotonic() - began
        figures = {"backfill_s": round(backfill_s, 1), "backfill_rows_per_s": round(stage["rows"] / backfill_s),
                   "backfill_peak_rss_mb": round(memory.peak_mb), "parallelism": args.parallelism,
                   "max_active_runs": args.max_active_runs}
        figures.update(_where_the_time_went(api, dag_id, runs, stage, backfill_s))
        print(f"airflow: backfill of {hours} runs in {backfill_s:.1f} s ({stage['rows'] / backfill_s:,.0f} rows/s; "
              f"target {TARGET_BACKFILL_S:.0f} s: {'met' if backfill_s <= TARGET_BACKFILL_S else 'MISSED'}); "
              f"peak RSS of a process {memory.peak_mb:.0f} MB ({memory.peak_of})", flush=True)
        figures.update(_health_over(api, args))
    finally:
        airflow.stop()
        if database:
            database.drop()
        if not args.keep_topics:
            bench_ingest.delete_topics(AdminClient(kafka), [topics[role] for role in INGEST_ROLES])
            shutil.rmtree(home, ignore_errors=True)
    return figures


def _where_the_time_went(api, dag_id: str, runs: list[dict], stage: dict, backfill_s: float) -> dict:
    """Per task: waiting for a slot, starting, running; the ingestion's own work; every row accounted for."""
    from datetime import datetime

    ids = {run["dag_run_id"] for run in runs}
    spans: dict[str, dict[str, float]] = {}

    def seconds(later: str | None, earlier: str | None) -> float:
        if not later or not earlier:
            return 0.0
        return max(0.0, (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds())

    for ti in api.task_instances(dag_id):
        if ti["dag_run_id"] not in ids:
            continue
        span = spans.setdefault(ti["task_id"], {"tasks": 0, "waiting": 0.0, "starting": 0.0, "running": 0.0})
        span["tasks"] += 1
        span["waiting"] += seconds(ti.get("queued_when"), ti.get("scheduled_when"))
        span["starting"] += seconds(ti.get("start_date"), ti.get("queued_when"))
        span["running"] += ti.get("duration") or 0.0
    results = [api.xcom(dag_id, run["dag_run_id"], "ingest_hour") for run in runs]
    read = sum(r["rows_read"] for r in results)
    produced = sum(r["rows_produced"] for r in results)
    dead = sum(r["rows_dead_lettered"] for r in results)
    unfinished = [r["hour"] for r in results if not r["complete"] or r["hour_rows_read"] != r["partition_rows"]]
    work = sum(r["duration_s"] for r in results)
    print(f"airflow: {read:,} rows read = {produced:,} produced + {dead:,} dead-lettered over {len(results)} hours; "
          f"the ingestion's own work {work:.1f} s in all")
    assert read == stage["rows"] == produced + dead and not unfinished, (read, produced, dead, stage["rows"], unfinished)
    print(f"\n{'task':<20}{'tasks':>6}{'wait for slot s':>17}{'starting s':>12}{'running s':>11}   (sums over tasks)")
    for task_id, span in spans.items():
        print(f"{task_id:<20}{span['tasks']:>6}{span['waiting']:>17.1f}{span['starting']:>12.1f}{span['running']:>11.1f}")
    total_running = sum(span["running"] for span in spans.values())
    print(f"task time in all {total_running:.1f} s over {backfill_s:.1f} s of wall time; the ingestion's own work "
          f"{work:.1f} s of it ({work / total_running:.0%}); the rest is task start-up, the sensor and staging checks")
    return {"backfill_produced": produced, "backfill_dead_lettered": dead, "backfill_ingest_work_s": round(work, 1),
            "backfill_task_s": round(total_running, 1),
            "backfill_tasks": {task_id: {k: round(v, 1) for k, v in span.items()} for task_id, span in spans.items()}}


def _health_over(api, args: argparse.Namespace) -> dict:
    """A pipeline_health run over the backfilled hours: each check's verdict and time."""
    from datetime import datetime

    run = api.send("POST", "/dags/pipeline_health/dagRuns", {"logical_date": None, "conf": {}})
    api.unpause("pipeline_health")
    began = time.monotonic()

    def finished():
        ended = api.get(f"/dags/pipeline_health/dagRuns/{run['dag_run_id']}")
        return ended if ended["state"] in ("success", "failed") else None

    ended = api.wait_for("the pipeline_health run to finish", finished, 3600)
    waited_s, state = time.monotonic() - began, ended["state"]
    # Its own time: unpausing also makes the cron's latest run, which goes first (one run at a time).
    health_s = (datetime.fromisoformat(ended["end_date"]) - datetime.fromisoformat(ended["start_date"])).total_seconds()
    checks = {}
    print(f"\npipeline_health over the backfilled hours: {state} in {health_s:.1f} s ({waited_s:.1f} s after the "
          "trigger, queued behind the scheduled run the unpause made)")
    for ti in api.task_instances("pipeline_health", run["dag_run_id"]):
        outcome = {}
        if ti["task_id"] not in ("report", "healthy"):
            try:
                outcome = api.get(f"/dags/pipeline_health/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}"
                                  "/xcomEntries/outcome")["value"]
            except Exception:  # a check that did not run (upstream failed) left none
                outcome = {}
            status = None if "ok" not in outcome else ("pass" if outcome["ok"] else "FAIL")
            checks[ti["task_id"]] = {"state": ti["state"], "seconds": round(ti.get("duration") or 0.0, 1),
                                     "check_s": outcome.get("elapsed_s"), "status": status}
        print(f"  {ti['task_id']:<20}{ti['state'] or '-':<16}{ti.get('duration') or 0:>7.1f} s  "
              f"{outcome.get('summary', '')[:110]}")
    print("  (the sandbox provisions only the ingestion's three topics and its run writes no CTR, so topic_drift, "
          "registry_drift and ctr_reconciliation have nothing of this run to judge)")
    reconciliation = checks.get("reconciliation", {})
    print(f"reconciliation of every hour: {reconciliation.get('status')} in {reconciliation.get('check_s')} s "
          f"(target {TARGET_HEALTH_S:.0f} s for the run)")
    return {"health_state": state, "health_s": round(health_s, 1), "health_waited_s": round(waited_s, 1),
            "health_checks": checks}


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
