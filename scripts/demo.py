"""`make demo`: run the pipeline's DAGs through `airflow dags test` against the local stack.

Each step is one DAG run; its task log goes to a file and what each task returned (its counts) is
printed. Later pipeline stages add their DAGs to STEPS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DemoStep:
    dag_id: str
    what: str
    conf: dict = field(default_factory=dict)


STEPS = [
    DemoStep("kafka_provisioning", "topics and schemas as declared in include/config/topics.yaml"),
    DemoStep("kafka_smoke", "Avro records through the broker and the registry and back",
             {"topic": "smoke_avro_roundtrip", "records": 1000}),
]


def _fail(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr)
    sys.exit(1)


def _preflight() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from include.reachability import ServiceUnreachable, check_broker, check_registry

    try:
        check_broker({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}, timeout=10)
        url = os.environ["SCHEMA_REGISTRY_URL"]
        check_registry(SchemaRegistryClient({"url": url}), url)
    except ServiceUnreachable as error:
        _fail(str(error))


def _task_results(dag_id: str, logical_date: dt.datetime) -> tuple[str, dict[str, object]]:
    """The run's state and each task's return value, read from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
        ).one()
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value")
        ).all()
        ordered = sorted(rows, key=lambda row: row.timestamp)
        return run.state, {row.task_id: XComModel.deserialize_value(row) for row in ordered}


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list) and value and all(isinstance(v, dict) and "action" in v for v in value):
        # A result table: how many rows took each action.
        actions: dict[str, int] = {}
        for row in value:
            actions[row["action"]] = actions.get(row["action"], 0) + 1
        return f"{len(value)} rows: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    return json.dumps(value, default=str)


def run_step(number: int, step: DemoStep, logs: Path) -> None:
    logical_date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    log = logs / f"demo-{step.dag_id}.log"
    print(f"[{number}/{len(STEPS)}] {step.dag_id}: {step.what}", flush=True)
    began = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", step.dag_id,
             logical_date.isoformat(), "--conf", json.dumps(step.conf)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    state, results = _task_results(step.dag_id, logical_date)
    for task_id, value in results.items():
        print(f"      {task_id:<18} {_describe(value)}")
    seconds = time.monotonic() - began
    if result.returncode != 0 or state != "success":
        _fail(f"{step.dag_id} ended {state} after {seconds:.0f} s; its task log is {log}")
    print(f"      {step.dag_id} succeeded in {seconds:.0f} s (task log: {log})", flush=True)


def main() -> None:
    logs = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow")) / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    _preflight()
    print(f"Running {len(STEPS)} DAG(s) with `airflow dags test` against Kafka at "
          f"{os.environ['KAFKA_BOOTSTRAP_SERVERS']} and the registry at "
          f"{os.environ['SCHEMA_REGISTRY_URL']}", flush=True)
    for number, step in enumerate(STEPS, start=1):
        run_step(number, step, logs)
    print("Demo finished: every step succeeded.")


if __name__ == "__main__":
    main()
