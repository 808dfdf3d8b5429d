"""Airflow's own services, locally: api-server (UI and REST API), scheduler, dag-processor, triggerer,
and with the Celery executor its Celery workers.

    python -m devstack.airflow start|stop|restart|status

Each is a process of its own with a pid file and a log under ``$AIRFLOW_HOME/services/``, started
with this Python's environment on PATH (the services start ``airflow`` subprocesses by name) and
the wiring of scripts/local-env.sh (run it through ``make airflow``). ``start`` is idempotent and
returns once each service reports healthy in the API server's health check (a Celery worker: once
it answers a ping over the broker); ``stop`` ends the scheduler first - its running tasks get
SIGTERM, so a stream processor finishes its batch, commits and closes - then the workers, whose
running tasks get SIGTERM the same way, then the others, each within seconds, with SIGKILL as the
last resort, and leaves no process behind.

The executor is the LocalExecutor unless AIRFLOW__CORE__EXECUTOR says CeleryExecutor (what
``AIRFLOW_EXECUTOR=celery`` makes scripts/local-env.sh export, with the metadata database on the
local stack's PostgreSQL and Redis as the broker); then AIRFLOW_CELERY_WORKERS workers (2) of
AIRFLOW_CELERY_CONCURRENCY task slots each (4) run beside the scheduler.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devstack import probes
from devstack.stack import Service, Stack, StackError, _env_int

USER = "admin"


@dataclass(frozen=True)
class AirflowSettings:
    """Where the services keep their state and listen (AIRFLOW_HOME, AIRFLOW_API_PORT)."""

    home: Path = field(default_factory=lambda: Path(os.environ.get("AIRFLOW_HOME") or Path.cwd() / ".airflow"))
    host: str = "127.0.0.1"
    api_port: int = field(default_factory=lambda: _env_int("AIRFLOW_API_PORT", 8080))
    # Task slots of the LocalExecutor: the always-on processors take two, a backfill a few more.
    # With Celery workers, the most tasks the scheduler keeps running or queued at once.
    parallelism: int = field(default_factory=lambda: _env_int("AIRFLOW_PARALLELISM", 8, "a number"))
    executor: str = field(default_factory=lambda: os.environ.get("AIRFLOW__CORE__EXECUTOR") or "LocalExecutor")
    celery_workers: int = field(default_factory=lambda: _env_int("AIRFLOW_CELERY_WORKERS", 2, "a number"))
    # Task slots of each Celery worker (its prefork pool's processes).
    celery_concurrency: int = field(default_factory=lambda: _env_int("AIRFLOW_CELERY_CONCURRENCY", 4, "a number"))

    def __post_init__(self) -> None:
        if self.celery and self.celery_workers < 1:
            raise StackError(f"AIRFLOW_CELERY_WORKERS={self.celery_workers}: the Celery executor needs a worker or more")

    @property
    def celery(self) -> bool:
        """Whether the tasks run on Celery workers (the CeleryExecutor, by any of its spellings)."""
        return self.executor.rsplit(".", 1)[-1] == "CeleryExecutor"

    @property
    def logs(self) -> Path:
        return self.home / "services"

    @property
    def run(self) -> Path:
        return self.home / "services"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"


class AirflowService(Service):
    """One Airflow component; healthy when the API server's health check says so."""

    component = ""  # the key in /api/v2/monitor/health
    start_timeout = 120.0
    stop_timeout = 20.0

    def ports(self) -> list[int]:
        return []

    def endpoint(self) -> str:
        return f"{self.settings.api_url}/api/v2/monitor/health"

    def command(self) -> tuple[list[str], dict[str, str]]:
        bin_dir = str(Path(sys.executable).parent)
        settings = self.settings
        return [str(Path(bin_dir) / "airflow"), *self.arguments()], {
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "AIRFLOW__CORE__EXECUTOR": settings.executor,
            "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
            "AIRFLOW__API__PORT": str(settings.api_port),
            "AIRFLOW__API__BASE_URL": settings.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.api_url}/execution/",
        }

    def arguments(self) -> list[str]:
        return [self.name]

    def answers(self) -> bool:
        health = probes.http_json(self.endpoint())
        if not isinstance(health, dict):
            return False
        return (health.get(self.component) or {}).get("status") == "healthy"


class ApiServer(AirflowService):
    name = "api-server"
    component = "metadatabase"

    def ports(self) -> list[int]:
        return [self.settings.api_port]

    def arguments(self) -> list[str]:
        return ["api-server", "--host", self.settings.host, "--port", str(self.settings.api_port)]

    def _port_hint(self, port: int) -> str:
        return "AIRFLOW_API_PORT"


class Scheduler(AirflowService):
    name = "scheduler"
    component = "scheduler"
    # Its running tasks are asked to stop (a processor commits its batch); give them the time to.
    stop_timeout = 45.0


class DagProcessor(AirflowService):
    name = "dag-processor"
    component = "dag_processor"


class Triggerer(AirflowService):
    name = "triggerer"
    component = "triggerer"


def metadata_url(stack: Stack, database: str = "airflow") -> str:
    """The SQLAlchemy URL of an Airflow metadata database on the local stack's PostgreSQL (as the airflow role)."""
    return stack.services["postgres"].url("airflow", database, scheme="postgresql+psycopg")


def celery_environment(stack: Stack | None = None, database: str = "airflow") -> dict[str, str]:
    """The settings of the Celery executor on the local stack, as scripts/local-env.sh exports them
    for AIRFLOW_EXECUTOR=celery, with the metadata in ``database`` (owned by the airflow role)."""
    stack = stack or Stack()
    metadata = metadata_url(stack, database)
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata}",
        "AIRFLOW__CELERY__BROKER_URL": stack.services["redis"].url(),
    }


# The environment variable through which a worker's task processes learn its Celery node name.
WORKER_NAME_VARIABLE = "AIRFLOW_CELERY_WORKER_NAME"


def worker_hostname() -> str:
    """The hostname a task instance records: its Celery worker's node name (``[core] hostname_callable``).

    Airflow records the machine's name by default, which is the same for every worker on one
    machine; the node name tells them apart.
    """
    return os.environ.get(WORKER_NAME_VARIABLE) or socket.getfqdn()


class CeleryWorker(AirflowService):
    """Celery worker ``n`` (``celery-worker-<n>``): takes Airflow's queued tasks from the broker and
    runs them; healthy when it answers a ping over the broker by its own node name."""

    # Its running tasks get SIGTERM with it and report their end through the API server.
    stop_timeout = 45.0

    def __init__(self, settings: AirflowSettings, number: int):
        super().__init__(settings)
        self.number = number
        self.name = f"celery-worker-{number}"

    @property
    def node_name(self) -> str:
        """The worker's Celery node name. Two Airflows on one machine (a test's beside `make airflow`)
        share the stack's Redis, so the name carries the API port, which only one of them has."""
        return f"worker{self.number}-{self.settings.api_port}@{socket.gethostname()}"

    def endpoint(self) -> str:
        return self.node_name

    def arguments(self) -> list[str]:
        return [
            "celery", "worker", "--celery-hostname", self.node_name,
            "--concurrency", str(self.settings.celery_concurrency),
            # Task logs are files in this AIRFLOW_HOME, which the API server reads itself; the
            # log server would take port 8793 once per worker.
            "--skip-serve-logs",
            # Nothing to sync with at start-up nor to gossip about: the scheduler hands out the work.
            "--without-mingle", "--without-gossip",
        ]

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        return argv, {**env, WORKER_NAME_VARIABLE: self.node_name,
                      # Named in full: run as `python -m devstack.airflow`, this module is __main__.
                      "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.airflow.worker_hostname"}

    def answers(self) -> bool:
        broker = os.environ.get("AIRFLOW__CELERY__BROKER_URL")
        return bool(broker) and probes.celery_worker_answers(broker, self.node_name)


# In start order; stopped in reverse. AirflowServices puts the Celery workers just before the
# scheduler, so they start before it and stop after it: no task is queued that no worker takes,
# and none is queued while they stop.
SERVICE_TYPES: dict[str, type[AirflowService]] = {cls.name: cls for cls in (ApiServer, DagProcessor, Scheduler, Triggerer)}


class AirflowServices:
    """The local Airflow services, addressed by name (see the module doc)."""

    def __init__(self, settings: AirflowSettings | None = None):
        self.settings = settings or AirflowSettings()
        services: list[AirflowService] = [cls(self.settings) for cls in SERVICE_TYPES.values()]
        # Every worker that is to run or still runs (started with a larger count, or before the
        # executor was switched back): stop and status must see them all.
        numbers = set(range(1, self.settings.celery_workers + 1)) if self.settings.celery else set()
        numbers |= {int(m.group(1)) for p in self.settings.run.glob("celery-worker-*.pid")
                    if (m := re.fullmatch(r"celery-worker-(\d+)\.pid", p.name))}
        workers = [CeleryWorker(self.settings, n) for n in sorted(numbers)]
        at = next(i for i, s in enumerate(services) if isinstance(s, Scheduler))
        services[at:at] = workers
        self.services = {s.name: s for s in services}

    @property
    def workers(self) -> list[CeleryWorker]:
        return [s for s in self.services.values() if isinstance(s, CeleryWorker)]

    def _check_celery_wiring(self) -> None:
        """The Celery executor's settings, present and not SQLite, or one sentence saying what to do."""
        database = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite")
        if not os.environ.get("AIRFLOW__CELERY__BROKER_URL") or database.startswith("sqlite"):
            raise StackError(
                "the Celery executor needs a broker (AIRFLOW__CELERY__BROKER_URL) and a metadata database "
                "other than SQLite (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN); start the local stack "
                "(`make stack-start`) and source scripts/local-env.sh with AIRFLOW_EXECUTOR=celery again"
            )

    def start(self, echo=print) -> None:
        if self.settings.celery:
            self._check_celery_wiring()
        if not (self.settings.home / "airflow.db").exists() and "sqlite" in os.environ.get(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite"):
            raise StackError(f"{self.settings.home} has no metadata database yet; run `make airflow-db` first")
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        started = []
        wanted = {w.name for w in self.workers if w.number <= self.settings.celery_workers} if self.settings.celery else set()
        for service in self.services.values():
            if isinstance(service, CeleryWorker) and service.name not in wanted:
                continue  # left over from an earlier start: stopped by `stop`, not started again
            if service.pid() is not None:
                echo(f"  {service.name}: already running")
                continue
            echo(f"  {service.name}: starting")
            service.spawn()
            started.append(service)
            if service.name == "api-server":
                # The others are healthy only once the API server answers the health check.
                service.wait_until_answers(time.monotonic() + service.start_timeout)
        for service in started:
            service.wait_until_answers(time.monotonic() + service.start_timeout)

    def stop(self, echo=print) -> None:
        order = list(reversed(self.services.values()))
        # The workers stop together: each may wait for its running tasks to end, and one after the
        # other those waits would add up.
        steps = [[s] for s in order if not isinstance(s, CeleryWorker)]
        if self.workers:
            at = next(i for i, s in enumerate(order) if isinstance(s, CeleryWorker))
            steps.insert(at, [s for s in order if isinstance(s, CeleryWorker)])
        for step in steps:
            with ThreadPoolExecutor(max_workers=len(step)) as pool:
                stopped = list(pool.map(lambda s: s.stop(timeout=s.stop_timeout), step))
            for service, was_running in zip(step, stopped):
                echo(f"  {service.name}: {'stopped' if was_running else 'was not running'}")

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(s.name, s.pid(), s.answers()) for s in self.services.values()]

    def describe(self) -> str:
        """Which executor runs the tasks, in a line."""
        if not self.settings.celery:
            return f"executor: {self.settings.executor}"
        names = ", ".join(w.node_name for w in self.workers if w.number <= self.settings.celery_workers)
        return f"executor: CeleryExecutor, {self.settings.celery_workers} workers ({names})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.airflow", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "restart", "status"])
    args = parser.parse_args(argv)
    try:
        services = AirflowServices()
        settings = services.settings
        if args.action in ("stop", "restart"):
            began = time.monotonic()
            print("Stopping Airflow")
            services.stop()
            print(f"Stopped in {time.monotonic() - began:.1f} s")
        if args.action in ("start", "restart"):
            began = time.monotonic()
            print(f"Starting Airflow (AIRFLOW_HOME={settings.home})")
            services.start()
            print(f"Ready in {time.monotonic() - began:.1f} s: the UI and the REST API are at {settings.api_url}")
            print(f"  {services.describe()}")
            print(f"  user {USER}, password in {settings.passwords_file}")
            print(f"  logs: {settings.logs}/<service>.log; stop with `make airflow-stop`")
        if args.action == "status":
            rows = services.status()
            print(f"  {services.describe()}")
            for name, pid, healthy in rows:
                state = "running" if pid and healthy else "starting or unhealthy" if pid else "stopped"
                print(f"  {name:<16} {state:<22} {f'pid {pid}' if pid else ''}")
            return 0 if all(pid and healthy for _, pid, healthy in rows) else 1
    except StackError as error:
        print(f"devstack.airflow: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
