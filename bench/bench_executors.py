"""Benchmark Airflow's executors on the same backfill: the LocalExecutor against two Celery workers.

    . scripts/local-env.sh && .venv/bin/python bench/bench_executors.py [--rows 1200000] [--hours 8]

Against the local stack (`make stack-start`), in one run, it generates an Avazu-format file of
``--rows`` rows over the first ``--hours`` hours (generated and staged before each run, outside its
timing) and backfills
``avazu_hourly_ingest`` over those hours twice, each time on an Airflow of its own started the way
`make airflow` starts it and writing to sandbox topics of its own:

* ``local`` - the LocalExecutor with its metadata in SQLite (the default), ``--parallelism`` task slots;
* ``celery`` - the CeleryExecutor with two workers of ``--parallelism``/2 slots each, Redis as the
  broker and the metadata on the stack's PostgreSQL (``AIRFLOW_EXECUTOR=celery``).

Each backfill is timed from its creation (POST /backfills, the DAG already parsed and unpaused)
until Airflow marks it complete, and checked: every hour's run succeeded and every source row is
in the topics exactly once (read_committed, whole). It prints both wall times, the Celery run's
tasks per worker and the ratio; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAG_ID = "avazu_hourly_ingest"
FIRST_HOUR = datetime(2014, 10, 21, tzinfo=timezone.utc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--hours", type=int, default=8)
    parser.add_argument("--parallelism", type=int, default=4, help="task slots in all, for either executor")
    parser.add_argument("--max-active-runs", type=int, default=4)
    args = parser.parse_args()

    from devstack import Stack
    from include.kafka.registry import registry_client
    from tests.exactly_once import assert_every_row_once
    from tests.local_airflow import LocalAirflow, celery_wiring, ingest_sandbox

    kafka = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}
    registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
    work = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    stack = Stack()
    began = time.monotonic()
    first = ingest_sandbox(work / "local", kafka, registry_url, args.rows, args.hours)
    print(f"{args.rows:,} rows over {args.hours} hours generated and staged in {time.monotonic() - began:.1f} s ({work})")

    def backfill(name: str, env: dict[str, str], sandbox) -> dict:
        local = LocalAirflow(work / name / "airflow", {**env, "AVAZU_CONFIG_DIR": str(sandbox.config_dir),
                                                       "AIRFLOW_PARALLELISM": str(args.parallelism)})
        api = local.start()
        try:
            api.wait_until_parsed(DAG_ID)
            api.unpause(DAG_ID)
            print(f"  {name}: started in {local.started_in:.1f} s; backfilling ...", flush=True)
            began = time.monotonic()
            runs = api.backfill(DAG_ID, FIRST_HOUR, args.hours, max_active_runs=args.max_active_runs,
                                timeout=3600)
            seconds = time.monotonic() - began
            ids = {r["dag_run_id"] for r in runs}
            hosts: dict[str, int] = {}
            for t in api.task_instances(DAG_ID):
                if t["dag_run_id"] in ids:
                    hosts[t["hostname"]] = hosts.get(t["hostname"], 0) + 1
        finally:
            local.stop()
        assert_every_row_once(kafka, registry_client(registry_url), sandbox.topics["raw"], sandbox.topics["dlq"],
                              sandbox.good_ids, sandbox.truth)
        print(f"  {name}: backfill {seconds:.1f} s, every row once; tasks per host {hosts}", flush=True)
        return {"seconds": round(seconds, 1), "tasks_per_host": hosts}

    results = {"local": backfill("local", {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, first)}
    # The same file (already staged: the runs find it so), new topics for the second run.
    second = ingest_sandbox(work / "celery", kafka, registry_url, args.rows, args.hours)
    wiring = celery_wiring(stack, workers=2, concurrency=max(1, args.parallelism // 2))
    try:
        results["celery"] = backfill("celery", wiring.env, second)
    finally:
        wiring.drop()

    local_s, celery_s = results["local"]["seconds"], results["celery"]["seconds"]
    print(f"\nbackfill of {args.hours} hours ({args.rows:,} rows), max {args.max_active_runs} runs at a time, "
          f"{args.parallelism} task slots:")
    print(f"  LocalExecutor (SQLite)                        {local_s:>8.1f} s")
    print(f"  CeleryExecutor, 2 workers (Redis, PostgreSQL) {celery_s:>8.1f} s")
    print(f"  Celery / Local = {celery_s / local_s:.2f}")
    print(json.dumps({"rows": args.rows, "hours": args.hours, "parallelism": args.parallelism,
                      "max_active_runs": args.max_active_runs, "local_s": local_s, "celery_s": celery_s,
                      "celery_over_local": round(celery_s / local_s, 2),
                      "celery_tasks_per_worker": results["celery"]["tasks_per_host"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
