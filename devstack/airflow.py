"""Airflow's own services, locally: api-server (UI and REST API), scheduler, dag-processor, triggerer.

    python -m devstack.airflow start|stop|restart|status

Each is a process of its own with a pid file and a log under ``$AIRFLOW_HOME/services/``, started
with this Python's environment on PATH (the services start ``airflow`` subprocesses by name) and
the wiring of scripts/local-env.sh (run it through ``make airflow``). ``start`` is idempotent and
returns once each service reports healthy in the API server's health check; ``stop`` ends the
scheduler first - its running tasks get SIGTERM, so a stream processor finishes its batch, commits
and closes - then the others, each within seconds, with SIGKILL as the last resort, and leaves no
process behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack import probes
from devstack.stack import Service, StackError, _env_int

USER = "admin"


@dataclass(frozen=True)
class AirflowSettings:
    """Where the services keep their state and listen (AIRFLOW_HOME, AIRFLOW_API_PORT)."""

    home: Path = field(default_factory=lambda: Path(os.environ.get("AIRFLOW_HOME") or Path.cwd() / ".airflow"))
    host: str = "127.0.0.1"
    api_port: int = field(default_factory=lambda: _env_int("AIRFLOW_API_PORT", 8080))
    # Task slots of the LocalExecutor: the always-on processors take two, a backfill a few more.
    parallelism: int = field(default_factory=lambda: _env_int("AIRFLOW_PARALLELISM", 8))

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
            "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
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


# In start order; stopped in reverse.
SERVICE_TYPES: dict[str, type[AirflowService]] = {cls.name: cls for cls in (ApiServer, DagProcessor, Scheduler, Triggerer)}


class AirflowServices:
    """The local Airflow services, addressed by name (see the module doc)."""

    def __init__(self, settings: AirflowSettings | None = None):
        self.settings = settings or AirflowSettings()
        self.services = {name: cls(self.settings) for name, cls in SERVICE_TYPES.items()}

    def start(self, echo=print) -> None:
        if not (self.settings.home / "airflow.db").exists() and "sqlite" in os.environ.get(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite"):
            raise StackError(f"{self.settings.home} has no metadata database yet; run `make airflow-db` first")
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        started = []
        for service in self.services.values():
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
        for service in reversed(list(self.services.values())):
            if service.stop(timeout=service.stop_timeout):
                echo(f"  {service.name}: stopped")
            else:
                echo(f"  {service.name}: was not running")

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(s.name, s.pid(), s.answers()) for s in self.services.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.airflow", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "restart", "status"])
    args = parser.parse_args(argv)
    services = AirflowServices()
    settings = services.settings
    try:
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
            print(f"  user {USER}, password in {settings.passwords_file}")
            print(f"  logs: {settings.logs}/<service>.log; stop with `make airflow-stop`")
        if args.action == "status":
            rows = services.status()
            for name, pid, healthy in rows:
                state = "running" if pid and healthy else "starting or unhealthy" if pid else "stopped"
                print(f"  {name:<14} {state:<22} {f'pid {pid}' if pid else ''}")
            return 0 if all(pid and healthy for _, pid, healthy in rows) else 1
    except StackError as error:
        print(f"devstack.airflow: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
