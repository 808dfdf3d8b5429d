"""A local Airflow of its own, for tests and benches: its services started and stopped as `make airflow`
does (``python -m devstack.airflow``) on an Airflow home, an API port and settings files of its own,
driven through the REST API as a user's script would.

``ingest_sandbox`` gives the hourly ingestion a generated source and sandbox topics
(``ingest_settings`` the topics and settings for a source of the caller's), so a backfill run here
never touches the local stack's own topics nor another test's; ``celery_wiring`` gives an Airflow
the Celery executor on the local stack's Redis and PostgreSQL with a metadata database and a
task queue of its own, so it shares nothing with a `make airflow` running beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import yaml
from confluent_kafka.admin import AdminClient

from devstack import Stack
from devstack.stack import process_sessions
from devstack.airflow import celery_environment, metadata_url
from include.avazu.generator import FaultKind, GenerationTruth, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.kafka.registry import registry_client
from include.kafka_admin.catalog import load_catalog
from include.kafka_admin.sandbox import provision_sandbox
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
INGEST_ROLES = ("raw", "dlq", "checkpoints")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """The REST API with a token from /auth/token, as a user's script would use it."""

    def __init__(self, url: str, password: str):
        self.url = url
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        token.raise_for_status()
        self.client = httpx.Client(base_url=f"{url}/api/v2", timeout=60,
                                   headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def get(self, path: str, **params):
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def get_all(self, path: str, key: str, **params) -> list[dict]:
        """Every item of a list endpoint, page by page (the API serves at most 100 at a time)."""
        items: list[dict] = []
        while True:
            page = self.get(path, **params, limit=100, offset=len(items))
            items.extend(page[key])
            if not page[key] or len(items) >= page["total_entries"]:
                return items

    def send(self, method: str, path: str, body: dict):
        response = self.client.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def unpause(self, dag_id: str) -> None:
        self.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]

    def wait_for(self, what: str, check, timeout: float):
        return wait_for(what, check, timeout)

    def wait_for_success(self, dag_id: str, run_id: str, timeout: float = 180) -> dict:
        def finished():
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        run = self.wait_for(f"{dag_id} run {run_id} to finish", finished, timeout)
        assert run["state"] == "success", f"{dag_id} run {run_id} ended {run['state']}"
        return run

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")["value"]

    def wait_until_parsed(self, *dag_ids: str, timeout: float = 90) -> None:
        self.wait_for(f"{', '.join(dag_ids)} to be parsed",
                      lambda: set(dag_ids) <= {d["dag_id"] for d in self.get("/dags", limit=100)["dags"]}, timeout)

    def create_backfill(self, dag_id: str, first: datetime, last: datetime, max_active_runs: int) -> dict:
        """POST /backfills of the hourly runs from ``first`` to ``last``; the backfill created."""
        body = {"dag_id": dag_id, "from_date": first.isoformat(), "to_date": last.isoformat(),
                "max_active_runs": max_active_runs, "reprocess_behavior": "failed", "dag_run_conf": {}}

        def create():
            response = self.client.post("/backfills", json=body)
            # SQLite answers 503 "Database is locked" while the scheduler writes: a transient refusal.
            if response.status_code == 503:
                return None
            assert response.status_code < 300, f"POST /backfills: {response.status_code} {response.text[:500]}"
            return response.json()

        return self.wait_for(f"the backfill of {dag_id} to be created", create, 120)

    def backfill(self, dag_id: str, first: datetime, hours: int, max_active_runs: int,
                 timeout: float = 900, check_alive=lambda: None) -> list[dict]:
        """Backfill ``hours`` hourly runs from ``first`` and wait until the backfill is complete; every run
        must have succeeded. The runs, in logical-date order. ``check_alive`` raises when a service died
        (a backfill never completes without its scheduler)."""
        last = first + timedelta(hours=hours - 1)
        created = self.create_backfill(dag_id, first, last, max_active_runs)

        def completed():
            check_alive()
            try:
                return self.get(f"/backfills/{created['id']}")["completed_at"]
            except httpx.TimeoutException:
                return None  # a busy API server: ask again at the next poll

        self.wait_for(f"the backfill of {dag_id} from {first:%Y-%m-%dT%H:%M} ({hours} hours) to complete",
                      completed, timeout)
        runs = sorted((r for r in self.get_all(f"/dags/{dag_id}/dagRuns", "dag_runs", run_type="backfill")
                       if first <= datetime.fromisoformat(r["logical_date"]) <= last), key=lambda r: r["logical_date"])
        assert len(runs) == hours, f"the backfill made {len(runs)} runs for {hours} hours"
        failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
        assert not failed, f"backfill runs ended failed: {failed}"
        return runs

    def task_instances(self, dag_id: str, run_id: str = "~") -> list[dict]:
        return self.get_all(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")


@dataclass
class LocalAirflow:
    """Airflow's services on a home and an API port of their own (``env`` holds the rest of the wiring)."""

    home: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    started_in: float = 0.0
    stopped_in: float = 0.0

    def __post_init__(self) -> None:
        # SQLite in the home unless the wiring says otherwise: never the caller's own metadata.
        sqlite = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db"}
        self.env = {**os.environ, **sqlite, **self.env, "AIRFLOW_HOME": str(self.home),
                    "AIRFLOW_API_PORT": str(self.port), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}

    def _run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> Api:
        """Migrate the metadata database and start the services; the API as the admin user."""
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = self._run("airflow", "db", "migrate")
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
        began = time.monotonic()
        start = self._run("devstack.airflow", "start")
        self.started_in = time.monotonic() - began
        assert start.returncode == 0, start.stdout + start.stderr
        password = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        return Api(f"http://127.0.0.1:{self.port}", password)

    def status(self) -> str:
        return self._run("devstack.airflow", "status").stdout

    def check_alive(self) -> None:
        """Fail naming the services whose process has ended, and their logs."""
        from devstack.airflow import AirflowServices, AirflowSettings

        services = AirflowServices(AirflowSettings(home=self.home, api_port=self.port)).services.values()
        dead = [s for s in services if s.pidfile.exists() and s.pid() is None]
        assert not dead, f"{', '.join(s.name for s in dead)} stopped on their own; see {', '.join(str(s.log) for s in dead)}"

    def stop(self) -> None:
        """Stop every service; fail when one is left behind."""
        began = time.monotonic()
        stop = self._run("devstack.airflow", "stop")
        self.stopped_in = time.monotonic() - began
        assert stop.returncode == 0, stop.stdout + stop.stderr
        left = leftover_processes(self.home)
        assert not left, f"processes left behind: {left}"


def copy_config_with_topics(config_dir: Path, topics: dict[str, str]) -> None:
    """The project's settings files copied to ``config_dir`` (for AVAZU_CONFIG_DIR), each declared
    topic renamed to ``topics[its role]``."""
    shutil.copytree(ROOT / "include" / "config", config_dir)
    declared = yaml.safe_load((config_dir / "topics.yaml").read_text())
    for topic in declared["topics"]:
        topic["name"] = topics[topic["role"]]
    (config_dir / "topics.yaml").write_text(yaml.safe_dump(declared))


def leftover_processes(home: Path) -> list[str]:
    """Pids of the processes devstack started for the Airflow home ``home`` that still run, and of the
    processes in their sessions: Airflow's task processes rewrite their title over the environment
    that marks them (setproctitle), but stay in the session of the service that started them."""
    marker, home_bytes = b"DEVSTACK_SERVICE=", str(home).encode()
    started: set[int] = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if home_bytes in environ and marker in environ:
                started.add(int(proc.name))
    # One look at every process's session (not one per process found): the peak-memory sampler asks often.
    in_their_sessions = {pid for pid, session in process_sessions().items() if session in started}
    return [str(pid) for pid in sorted(in_their_sessions | started)]


@dataclass
class IngestSandbox:
    """A generated Avazu source of a few hours, sandbox topics, and settings files that point the DAGs at them."""

    config_dir: Path
    topics: dict[str, str]
    truth: GenerationTruth
    good_ids: Counter
    hours: int


def ingest_sandbox(folder: Path, kafka_config: dict, registry_url: str, rows: int, hours: int,
                   seed: int = 11, fault_rate: float = 0.001) -> IngestSandbox:
    """``rows`` rows over the first ``hours`` Avazu hours with every kind of fault, staged, and the
    settings of :func:`ingest_settings` pointing the DAGs at them."""
    from include.ingest.staging import stage_source

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "train.csv.gz"
    truth = generate(GeneratorSpec(rows, hours=hours, seed=seed,
                                   fault_rates={kind: fault_rate for kind in FaultKind}), source)
    good, _, _ = read_all(str(source))
    stage_source(str(source), str(folder / "staging"))
    config_dir, topics = ingest_settings(folder / "config", kafka_config, registry_url, source, folder / "staging")
    return IngestSandbox(config_dir, topics, truth, Counter(r["id"] for r in good), hours)


def ingest_settings(config_dir: Path, kafka_config: dict, registry_url: str, source: Path,
                    staging: Path) -> tuple[Path, dict[str, str]]:
    """A copy of include/config whose topics are sandbox copies (the ingestion's three provisioned) and
    whose ingestion reads ``source``, staged in ``staging``, in backfill mode: a run that is no backfill
    (the scheduled one an unpaused DAG gets) fails at once and writes nothing. The folder and the
    topics by role."""
    suffix = uuid.uuid4().hex[:8]
    topics = {t.role: f"sbx_{t.role}_{suffix}" for t in load_catalog().topics}
    provision_sandbox(AdminClient(kafka_config), registry_client(registry_url),
                      {role: topics[role] for role in INGEST_ROLES})
    copy_config_with_topics(config_dir, topics)
    ingest = yaml.safe_load((config_dir / "ingest.yaml").read_text())
    ingest.pop("generate_if_missing", None)
    ingest.update(source_uri=str(source), staging_uri=str(staging), mode="backfill",
                  partition_wait={"timeout_s": 60, "poke_interval_s": 5})
    (config_dir / "ingest.yaml").write_text(yaml.safe_dump(ingest))
    return config_dir, topics


@dataclass
class MetadataDatabase:
    """An Airflow metadata database of its own on the local stack's PostgreSQL, owned by the airflow role;
    ``drop`` removes it afterwards."""

    stack: Stack
    name: str

    @property
    def url(self) -> str:
        return metadata_url(self.stack, self.name)

    def drop(self) -> None:
        self.stack.services["postgres"].drop_database(self.name)


def metadata_database(stack: Stack, prefix: str = "airflow_sbx") -> MetadataDatabase:
    """A new, empty metadata database named ``<prefix>_<8 hex>``."""
    database = MetadataDatabase(stack, f"{prefix}_{uuid.uuid4().hex[:8]}")
    stack.services["postgres"].create_database(database.name, "airflow")
    return database


@dataclass
class CeleryWiring:
    """The Celery executor's settings for one Airflow, and the metadata database to drop afterwards."""

    env: dict[str, str]
    database: MetadataDatabase

    def drop(self) -> None:
        self.database.drop()


def celery_wiring(stack: Stack, workers: int = 2, concurrency: int = 2) -> CeleryWiring:
    """The Celery executor on the local stack's Redis and PostgreSQL, with a metadata database and a task
    queue of its own (the Redis is shared with any other Airflow on this machine)."""
    database = metadata_database(stack)
    suffix = database.name.rsplit("_", 1)[1]
    env = {**celery_environment(stack, database.name), "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"sbx-{suffix}",
           "AIRFLOW_CELERY_WORKERS": str(workers), "AIRFLOW_CELERY_CONCURRENCY": str(concurrency)}
    return CeleryWiring(env, database)
