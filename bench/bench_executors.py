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
in the topics exactly once (read_committed, whole). ``--rounds 2`` runs them local, celery, celery,
local, so a machine whose load drifts during the bench weighs on both alike; each run prints the
load average it ran under. It prints the wall times (the mean per executor), the Celery runs' tasks
per worker and the ratio; the last line is JSON.
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
    parser.add_argument("--rounds", type=int, default=1, help="backfills per executor, alternating (ABBA ...)")
    args = parser.parse_args()

    from devstack import Stack
    from include.kafka.registry import registry_client
    from tests.exactly_once import assert_every_row_once
    from tests.local_airflow import LocalAirflow, celery_wiring, ingest_sandbox

    kafka = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}
    registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
    work = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    stack = Stack()

    def backfill(name: str, env: dict[str, str]) -> dict:
        began = time.monotonic()
        folder = work / f"{name}-{len(list(work.glob(f'{name}-*')))}"
        sandbox = ingest_sandbox(folder, kafka, registry_url, args.rows, args.hours)
        print(f"  {name}: {args.rows:,} rows over {args.hours} hours generated and staged in "
              f"{time.monotonic() - began:.1f} s ({folder})", flush=True)
        local = LocalAirflow(folder / "airflow", {**env, "AVAZU_CONFIG_DIR": str(sandbox.config_dir),
                                                  "AIRFLOW_PARALLELISM": str(args.parallelism)})
        api = local.start()
        try:
            api.wait_until_parsed(DAG_ID)
            api.unpause(DAG_ID)
            print(f"  {name}: started in {local.started_in:.1f} s; backfilling ...", flush=True)
            began = time.monotonic()
            runs = api.backfill(DAG_ID, FIRST_HOUR, args.hours, max_active_runs=args.max_active_runs,
                                timeout=3600, check_alive=local.check_alive)
            seconds = time.monotonic() - began
            load = os.getloadavg()[0]
            ids = {r["dag_run_id"] for r in runs}
            hosts: dict[str, int] = {}
            for t in api.task_instances(DAG_ID):
                if t["dag_run_id"] in ids:
                    hosts[t["hostname"]] = hosts.get(t["hostname"], 0) + 1
        finally:
            local.stop()
        assert_every_row_once(kafka, registry_client(registry_url), sandbox.topics["raw"], sandbox.topics["dlq"],
                              sandbox.good_ids, sandbox.truth)
        print(f"  {name}: backfill {seconds:.1f} s (load average {load:.1f} at its end), every row once; "
              f"tasks per host {hosts}", flush=True)
        return {"seconds": round(seconds, 1), "load": round(load, 1), "tasks_per_host": hosts}

    def celery() -> dict:
        wiring = celery_wiring(stack, workers=2, concurrency=max(1, args.parallelism // 2))
        try:
            return backfill("celery", wiring.env)
        finally:
            wiring.drop()

    runners = {"local": lambda: backfill("local", {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}), "celery": celery}
    order = [name for r in range(args.rounds) for name in (("local", "celery") if r % 2 == 0 else ("celery", "local"))]
    results: dict[str, list[dict]] = {"local": [], "celery": []}
    for name in order:
        results[name].append(runners[name]())

    def mean(name: str) -> float:
        return round(sum(r["seconds"] for r in results[name]) / len(results[name]), 1)

    local_s, celery_s = mean("local"), mean("celery")
    runs = lambda name: ", ".join(f"{r['seconds']:.1f}" for r in results[name])
    print(f"\nbackfill of {args.hours} hours ({args.rows:,} rows), max {args.max_active_runs} runs at a time, "
          f"{args.parallelism} task slots, {args.rounds} run(s) each:")
    print(f"  LocalExecutor (SQLite)                        {local_s:>8.1f} s  ({runs('local')})")
    print(f"  CeleryExecutor, 2 workers (Redis, PostgreSQL) {celery_s:>8.1f} s  ({runs('celery')})")
    print(f"  Celery / Local = {celery_s / local_s:.2f}")
    print(json.dumps({"rows": args.rows, "hours": args.hours, "parallelism": args.parallelism,
                      "max_active_runs": args.max_active_runs, "rounds": args.rounds,
                      "local_s": local_s, "celery_s": celery_s, "celery_over_local": round(celery_s / local_s, 2),
                      "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
