"""Redis and the Celery workers as configured (no server): Redis's command line and config file,
the workers `make airflow` adds when the Celery executor is chosen, and that scripts/local-env.sh
wires AIRFLOW_EXECUTOR=celery exactly as devstack.airflow.celery_environment() does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import Stack, StackError, StackSettings
from devstack import __main__ as cli
from devstack.airflow import (
    WORKER_NAME_VARIABLE,
    AirflowService,
    AirflowServices,
    AirflowSettings,
    CeleryWorker,
    celery_environment,
    worker_hostname,
)
from devstack.probes import free_ports

ROOT = Path(__file__).resolve().parents[2]
CELERY_KEYS = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
               "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL")


@pytest.fixture
def redis(tmp_path, monkeypatch):
    service = Stack(StackSettings(home=tmp_path, redis_port=16379)).services["redis"]
    monkeypatch.setattr(type(service), "_binary", lambda self: "/usr/bin/redis-server")
    return service


def test_redis_runs_its_config_file_which_holds_the_password_and_only_its_owner_reads(redis, tmp_path, monkeypatch):
    redis.prepare()
    argv, env = redis.command()
    assert argv == ["/usr/bin/redis-server", str(tmp_path / "redis" / "redis.conf")] and env == {}
    password = redis.password_file.read_text()
    assert len(password) >= 32 and password not in " ".join(argv)
    config = redis.config_file.read_text().splitlines()
    assert {"bind 127.0.0.1", "port 16379", f"dir {tmp_path / 'redis' / 'data'}", "appendonly yes",
            f"requirepass {password}", "daemonize no"} <= set(config)
    assert redis.config_file.stat().st_mode & 0o777 == redis.password_file.stat().st_mode & 0o777 == 0o600
    # A second start keeps the password and rewrites the port.
    moved = Stack(StackSettings(home=tmp_path, redis_port=16380)).services["redis"]
    monkeypatch.setattr(type(moved), "_binary", lambda self: "/usr/bin/redis-server")
    moved.prepare()
    assert moved.password_file.read_text() == password and "port 16380" in moved.config_file.read_text()


def test_redis_port_moves_it_and_a_bad_one_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_PORT", "56379")
    assert Stack(StackSettings(home=tmp_path)).services["redis"].ports() == [56379]
    monkeypatch.setenv("REDIS_PORT", "six")
    with pytest.raises(StackError, match=r"^REDIS_PORT='six' is not a port number$"):
        StackSettings(home=tmp_path)
    monkeypatch.delenv("REDIS_PORT")
    assert StackSettings(home=tmp_path).redis_port == 6379


def test_redis_not_installed_is_one_sentence_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StackError) as error:
        Stack(StackSettings(home=tmp_path)).services["redis"].prepare()
    assert str(error.value) == ("Redis is needed as the broker of Airflow's Celery workers but redis-server is not "
                                "installed (not on PATH); install Debian's package (apt-get install redis-server)")


def test_redis_port_taken_names_redis_port(tmp_path):
    (port,) = free_ports(1)
    service = Stack(StackSettings(home=tmp_path, redis_port=port)).services["redis"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StackError) as error:
            service.spawn()
    assert str(error.value) == (f"port {port} for redis is already in use by a process devstack did not start; "
                                "stop that process or choose another port (REDIS_PORT)")


def test_the_broker_url_has_the_password_and_devstack_env_prints_it_redacted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path))
    monkeypatch.setenv("REDIS_PORT", "16379")
    assert Stack().environment()["REDIS_URL"] == "redis://127.0.0.1:16379/0"  # before the first start
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.password").write_text("s3cret-Pass_word\n")
    assert Stack().environment()["REDIS_URL"] == "redis://:s3cret-Pass_word@127.0.0.1:16379/0"
    assert cli.main(["env"]) == 0
    printed = capsys.readouterr().out
    assert "export REDIS_URL='redis://:***@127.0.0.1:16379/0'" in printed.splitlines()
    assert "s3cret" not in printed


def test_postgres_keeps_a_password_per_role_and_gives_airflow_its_database(tmp_path):
    postgres = Stack(StackSettings(home=tmp_path, postgres_port=15432)).services["postgres"]
    postgres.state_dir.mkdir(parents=True)
    postgres._write_password()
    ctr, airflow = (postgres.password_file_of(r).read_text() for r in ("ctr", "airflow"))
    assert ctr != airflow and postgres.password_file.read_text() == ctr
    assert postgres.password_file_of("airflow").stat().st_mode & 0o777 == 0o600
    assert postgres.url() == f"postgresql://ctr:{ctr}@127.0.0.1:15432/ctr"
    assert (postgres.url("airflow", "airflow_test_1", scheme="postgresql+psycopg")
            == f"postgresql+psycopg://airflow:{airflow}@127.0.0.1:15432/airflow_test_1")
    with pytest.raises(StackError, match=r"^'x; DROP' is not a plain database name"):
        postgres.create_database("x; DROP", "airflow")


def _celery_settings(monkeypatch, tmp_path, **env) -> AirflowSettings:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AirflowSettings(home=tmp_path, api_port=18080)


def test_the_celery_executor_adds_its_workers_before_the_scheduler(monkeypatch, tmp_path):
    services = AirflowServices(_celery_settings(monkeypatch, tmp_path, AIRFLOW_CELERY_WORKERS="3"))
    assert list(services.services) == ["api-server", "dag-processor", "celery-worker-1", "celery-worker-2",
                                       "celery-worker-3", "scheduler", "triggerer"]
    names = [w.node_name for w in services.workers]
    assert len(set(names)) == 3 and all(n.startswith(f"worker{i}-18080@") for i, n in enumerate(names, 1))
    assert services.describe().startswith("executor: CeleryExecutor, 3 workers (worker1-18080@")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    local = AirflowServices(AirflowSettings(home=tmp_path))
    assert list(local.services) == ["api-server", "dag-processor", "scheduler", "triggerer"]
    assert local.describe() == "executor: LocalExecutor"


def test_a_worker_runs_airflows_celery_worker_under_its_own_name_which_its_tasks_record(monkeypatch, tmp_path):
    settings = _celery_settings(monkeypatch, tmp_path, AIRFLOW_CELERY_CONCURRENCY="3")
    worker = CeleryWorker(settings, 2)
    argv, env = worker.command()
    assert argv[0] == str(Path(sys.executable).parent / "airflow")
    assert argv[1:] == ["celery", "worker", "--celery-hostname", worker.node_name, "--concurrency", "3",
                        "--skip-serve-logs", "--without-mingle", "--without-gossip"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env[WORKER_NAME_VARIABLE] == worker.node_name
    # The task processes inherit the environment, and Airflow asks this callable for their hostname.
    module, _, function = env["AIRFLOW__CORE__HOSTNAME_CALLABLE"].rpartition(".")
    monkeypatch.setenv(WORKER_NAME_VARIABLE, worker.node_name)
    assert getattr(__import__(module, fromlist=[function]), function)() == worker.node_name
    monkeypatch.delenv(WORKER_NAME_VARIABLE)
    assert worker_hostname() == socket.getfqdn()
    assert (worker.name, worker.pidfile, worker.log) == ("celery-worker-2", tmp_path / "services" / "celery-worker-2.pid",
                                                         tmp_path / "services" / "celery-worker-2.log")


def test_stop_ends_the_scheduler_then_every_worker_at_once_then_the_rest(monkeypatch, tmp_path):
    services = AirflowServices(_celery_settings(monkeypatch, tmp_path, AIRFLOW_CELERY_WORKERS="3"))
    calls, lines = [], []

    def stop(self, timeout):
        calls.append((self.name, timeout))
        if isinstance(self, CeleryWorker):
            # Every worker is told before any has stopped: one waiting on its tasks holds up no other.
            wait_for_all = time.monotonic() + 5
            while sum(name.startswith("celery-worker") for name, _ in calls) < 3 and time.monotonic() < wait_for_all:
                time.sleep(0.01)
        return self.name != "triggerer"

    monkeypatch.setattr(AirflowService, "stop", stop)
    services.stop(echo=lines.append)
    names = [name for name, _ in calls]
    assert names[:2] == ["triggerer", "scheduler"] and names[-2:] == ["dag-processor", "api-server"]
    assert sorted(names[2:5]) == ["celery-worker-1", "celery-worker-2", "celery-worker-3"]
    assert dict(calls)["celery-worker-2"] == dict(calls)["scheduler"] == 45.0
    assert lines[0] == "  triggerer: was not running" and "  celery-worker-3: stopped" in lines


def test_workers_left_from_an_earlier_start_are_stopped_and_shown_whatever_the_executor_now(monkeypatch, tmp_path):
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "celery-worker-4.pid").write_text("999999999 1")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert "celery-worker-4" in AirflowServices(AirflowSettings(home=tmp_path)).services


def test_the_celery_executor_without_its_broker_or_on_sqlite_is_one_sentence(monkeypatch, tmp_path):
    settings = _celery_settings(monkeypatch, tmp_path, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path}/a.db")
    monkeypatch.delenv("AIRFLOW__CELERY__BROKER_URL", raising=False)
    with pytest.raises(StackError) as error:
        AirflowServices(settings).start(echo=lambda line: None)
    assert str(error.value) == (
        "the Celery executor needs a broker (AIRFLOW__CELERY__BROKER_URL) and a metadata database other than "
        "SQLite (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN); start the local stack (`make stack-start`) and source "
        "scripts/local-env.sh with AIRFLOW_EXECUTOR=celery again")
    monkeypatch.setenv("AIRFLOW_CELERY_WORKERS", "0")
    with pytest.raises(StackError, match=r"^AIRFLOW_CELERY_WORKERS=0: the Celery executor needs a worker or more$"):
        AirflowSettings(home=tmp_path)


def _local_env(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in ("DEVSTACK_HOME",)}
    return subprocess.run(["bash", "-c", ". scripts/local-env.sh && env -0"], cwd=ROOT, capture_output=True,
                          env={**clean, "DEVSTACK_HOME": str(tmp_path), **env})


def test_local_env_wires_airflow_executor_celery_as_devstack_does(tmp_path, monkeypatch):
    for folder, name in (("postgres", "airflow.password"), ("redis", "redis.password")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(f"pw-of-{folder}\n")
    ports = {"POSTGRES_PORT": "15432", "REDIS_PORT": "16379"}
    result = _local_env(tmp_path, AIRFLOW_EXECUTOR="celery", **ports)
    assert result.returncode == 0, result.stderr
    exported = dict(e.decode().partition("=")[::2] for e in result.stdout.split(b"\0") if e)
    for key, value in {"DEVSTACK_HOME": str(tmp_path), **ports}.items():
        monkeypatch.setenv(key, value)
    expected = celery_environment(Stack())
    assert {k: exported.get(k) for k in CELERY_KEYS} == expected
    assert expected["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg://airflow:pw-of-postgres@127.0.0.1:15432/airflow"
    assert expected["AIRFLOW__CELERY__BROKER_URL"] == "redis://:pw-of-redis@127.0.0.1:16379/0"

    # The default stays the LocalExecutor on SQLite, with no Celery settings at all.
    local = _local_env(tmp_path)
    exported = dict(e.decode().partition("=")[::2] for e in local.stdout.split(b"\0") if e)
    assert exported["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert not {"AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL"} & set(exported)


def test_local_env_refuses_an_unknown_executor_in_one_sentence(tmp_path):
    result = _local_env(tmp_path, AIRFLOW_EXECUTOR="kubernetes")
    assert result.returncode != 0
    assert result.stderr.decode().strip() == "scripts/local-env.sh: AIRFLOW_EXECUTOR=kubernetes is neither local nor celery"
