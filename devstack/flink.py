"""A Flink session cluster from PyFlink's own distribution, for the CTR job (flink/ctr_job.py).

    python -m devstack.flink start|stop|restart|status
    python -m devstack.flink submit [--savepoint PATH] [--client-config FILE] [-- job arguments]
                                    # default --topic: the catalog's raw topic

PyFlink lives in ``.venv-flink`` (``make flink-venv``): its wheel is a whole Flink 2.2 (bin/, lib/,
conf/), and installed into the project's venv it would downgrade pandas and pyarrow. The job
manager and one task manager run in the foreground under devstack's process handling, with a
config generated into ``.devstack/flink/conf`` (REST on FLINK_REST_PORT, checkpoints and savepoints
under ``.devstack/flink``); the job's connector jars are fetched from Maven Central once into the
shared jar cache, and the ``avro-wire`` format (flink/format) is built with Maven once per version
of its sources.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from devstack import probes
from devstack.stack import (PROJECT_ROOT, Service, StackError, StackSettings, _env_int, _maven_fetch, _mvn, _once,
                            _pom_property)

FLINK_DIR = PROJECT_ROOT / "flink"
JARS_POM = FLINK_DIR / "jars" / "pom.xml"
FORMAT_POM = FLINK_DIR / "format" / "pom.xml"
JOB_SCRIPT = FLINK_DIR / "ctr_job.py"


@dataclass(frozen=True)
class FlinkSettings:
    """Where the cluster keeps its state and listens; FLINK_* variables override."""

    stack: StackSettings = field(default_factory=StackSettings)
    venv: Path = field(default_factory=lambda: Path(os.environ.get("FLINK_VENV") or PROJECT_ROOT / ".venv-flink"))
    # Where the job manager is: the local stack's host unless FLINK_HOST names another (the compose
    # file's flink-jobmanager); submit and the REST client go there.
    host: str = field(default_factory=lambda: os.environ.get("FLINK_HOST", ""))
    rest_port: int = field(default_factory=lambda: _env_int("FLINK_REST_PORT", 8082))
    rpc_port: int = field(default_factory=lambda: _env_int("FLINK_RPC_PORT", 6123))
    task_slots: int = field(default_factory=lambda: _env_int("FLINK_TASK_SLOTS", 2))
    taskmanager_memory: str = field(default_factory=lambda: os.environ.get("FLINK_TASKMANAGER_MEMORY", "1536m"))

    @property
    def home(self) -> Path:
        return self.stack.home / "flink"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def address(self) -> str:
        return self.host or self.stack.host

    @property
    def rest_url(self) -> str:
        return f"http://{self.address}:{self.rest_port}"

    @property
    def flink_home(self) -> Path:
        """PyFlink's package folder, which is a Flink distribution (bin/, lib/, conf/)."""
        found = sorted(glob.glob(str(self.venv / "lib" / "python3*" / "site-packages" / "pyflink" / "bin" / "flink")))
        if not found:
            raise StackError(f"PyFlink is not installed in {self.venv}; run `make flink-venv`")
        return Path(found[0]).parent.parent


def connector_jars(settings: FlinkSettings) -> list[Path]:
    """The job's jars from Maven Central, fetched once into the shared cache (a folder per pom)."""
    digest = hashlib.sha256(JARS_POM.read_bytes()).hexdigest()[:12]
    target = settings.stack.cache / f"flink-ctr-jars-{_pom_property(JARS_POM, 'flink.version')}-{digest}"
    _maven_fetch(JARS_POM, target, settings.stack.logs / "fetch-flink-jars.log", "the Flink job's connector jars")
    return sorted(target.glob("*.jar"))


def format_jar(settings: FlinkSettings) -> Path:
    """The avro-wire format, built with Maven once per version of its sources into the shared cache."""
    sources = sorted(p for p in (FLINK_DIR / "format").rglob("*") if p.is_file() and "target" not in p.parts)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    build = settings.stack.cache / f"flink-avro-wire-format-{digest}"
    jar = build / "flink-avro-wire-format.jar"

    def build_format() -> None:
        mvn = _mvn("build flink/format")
        log = settings.stack.logs / "build-flink-format.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print("  building the avro-wire format (flink/format) with Maven ...", flush=True)
        with log.open("w") as out:
            result = subprocess.run([mvn, "-B", "-f", str(FORMAT_POM), "package", f"-Dformat.build.dir={build}"],
                                    stdout=out, stderr=subprocess.STDOUT)
        built = build / "flink-avro-wire-format-1.jar"
        if result.returncode != 0 or not built.exists():
            raise StackError(f"building flink/format with mvn failed (exit {result.returncode}); see {log}")
        built.rename(jar)

    _once(jar, build, "the avro-wire format", build_format)
    return jar


def job_jars(settings: FlinkSettings) -> list[Path]:
    return [*connector_jars(settings), format_jar(settings)]


def cluster_options(settings: FlinkSettings) -> dict[str, object]:
    """What the CTR job needs of any cluster it runs on: this one, and the compose file's (whose
    FLINK_PROPERTIES tests/unit/test_compose_stack.py compares with these)."""
    return {
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.numberOfTaskSlots": settings.task_slots,
        "taskmanager.memory.process.size": settings.taskmanager_memory,
        "parallelism.default": 1,
        "state.backend.type": "hashmap",
        # A task manager that died is noticed in seconds, not Flink's default of 50 s.
        "heartbeat.interval": 2000,
        "heartbeat.timeout": 10000,
        # The REST API's metrics are at most 2 s old (Flink's default: 10 s): ctr_stream's progress
        # lines and the benchmark's rates read them.
        "metrics.fetcher.update-interval": 2000,
        # Under the cluster's state folder, where ctr_stream's restore-point file points.
        "execution.checkpointing.dir": (settings.home / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (settings.home / "savepoints").as_uri(),
    }


def write_config(settings: FlinkSettings) -> Path:
    """Flink's config.yaml for this cluster, and the distribution's log4j files beside it."""
    conf = settings.conf_dir
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "log4j-cli.properties", "log4j.properties"):
        shutil.copyfile(settings.flink_home / "conf" / name, conf / name)
    host = settings.stack.host
    values = {
        "jobmanager.rpc.address": host,
        "jobmanager.rpc.port": settings.rpc_port,
        "jobmanager.bind-host": host,
        "taskmanager.bind-host": host,
        "taskmanager.host": host,
        "rest.address": host,
        "rest.bind-address": host,
        "rest.port": settings.rest_port,
        **cluster_options(settings),
        # `flink run -py` plans the job with this Python, not whatever is first on PATH.
        "python.client.executable": str(settings.venv / "bin" / "python"),
        "python.executable": str(settings.venv / "bin" / "python"),
    }
    # The distribution's own config holds the JVM flags Flink needs on Java 17 (--add-opens ...).
    tree = yaml.safe_load((settings.flink_home / "conf" / "config.yaml").read_text()) or {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = conf / "config.yaml"
    path.write_text("# Generated by devstack.flink from PyFlink's conf/config.yaml; rewritten at every start.\n"
                    + yaml.safe_dump(tree, sort_keys=True))
    return path


class FlinkProcess(Service):
    """A job manager or task manager in the foreground (bin/<script> start-foreground)."""

    script = ""
    start_timeout = 90.0

    def __init__(self, settings: FlinkSettings):
        super().__init__(settings.stack)
        self.flink = settings

    @property
    def log(self) -> Path:
        return self.flink.home / "log" / f"{self.name}.log"

    def prepare(self) -> None:
        write_config(self.flink)

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {"FLINK_CONF_DIR": str(self.flink.conf_dir), "FLINK_LOG_DIR": str(self.log.parent)}
        return [str(self.flink.flink_home / "bin" / self.script), "start-foreground"], env

    def endpoint(self) -> str:
        return self.flink.rest_url


class FlinkJobManager(FlinkProcess):
    name = "flink-jobmanager"
    script = "jobmanager.sh"

    def ports(self) -> list[int]:
        return [self.flink.rest_port, self.flink.rpc_port]

    def _port_hint(self, port: int) -> str:
        return "FLINK_REST_PORT" if port == self.flink.rest_port else "FLINK_RPC_PORT"

    def answers(self) -> bool:
        return isinstance(probes.http_json(f"{self.flink.rest_url}/overview"), dict)


class FlinkTaskManager(FlinkProcess):
    name = "flink-taskmanager"
    script = "taskmanager.sh"

    def ports(self) -> list[int]:
        return []

    def answers(self) -> bool:
        overview = probes.http_json(f"{self.flink.rest_url}/overview")
        return isinstance(overview, dict) and overview.get("taskmanagers", 0) > 0


class FlinkCluster:
    """The job manager and its task manager, started and stopped together."""

    def __init__(self, settings: FlinkSettings | None = None):
        self.settings = settings or FlinkSettings()
        self.processes: list[FlinkProcess] = [FlinkJobManager(self.settings), FlinkTaskManager(self.settings)]

    def start(self, echo=print) -> None:
        """Start what is not running and wait until the task manager has registered. Idempotent."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        for process in self.processes:
            if process.pid() is None:
                echo(f"  {process.name}: starting")
                process.spawn()
            else:
                echo(f"  {process.name}: already running")
            process.wait_until_answers(time.monotonic() + process.start_timeout)

    def stop(self, echo=print) -> None:
        for process in reversed(self.processes):
            echo(f"  {process.name}: {'stopped' if process.stop() else 'was not running'}")

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(p.name, p.pid(), p.answers()) for p in self.processes]


# flink-sql-connector-kafka relocates the Kafka client here: the JAAS config names its login module.
CONNECTOR_KAFKA_PACKAGE = "org.apache.flink.kafka.shaded.org.apache.kafka"


def flink_kafka_properties(kafka_config: Mapping[str, Any]) -> dict[str, str]:
    """The Kafka Java client's properties of the job's sources, from librdkafka settings (a connection's
    extra, a client settings file); an unsupported setting raises UnsupportedClientSetting, naming it."""
    from include.kafka.java_client import java_client_properties

    return java_client_properties(kafka_config, kafka_package=CONNECTOR_KAFKA_PACKAGE)


def job_environment(postgres_url: str, kafka_properties: Mapping[str, str] | None = None) -> dict[str, str]:
    """What flink/ctr_job.py reads from its environment: its sinks' database and its sources' Kafka client.

    * ``CTR_JDBC_URL``, ``CTR_JDBC_USER`` and ``CTR_JDBC_PASSWORD`` from a postgresql:// URL;
    * ``CTR_KAFKA_PROPERTIES`` and ``CTR_KAFKA_SECRET_PROPERTIES``: the Java client properties
      (:func:`flink_kafka_properties`; JSON objects) without and with secrets, e.g. the JAAS config
      with the SASL password. ``bootstrap.servers`` is the job's ``--bootstrap-servers`` instead.

    Nothing secret is on the job's command line, which every process on the machine can read. Flink's
    client logs its environment, masking variables whose name says secret or password (and nothing
    else): every value that holds a secret is in a variable named so, and the URL is not handed on whole.
    """
    from include.kafka.java_client import is_secret

    parts = urlsplit(postgres_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.username:
        raise StackError("POSTGRES_URL is not a postgresql://user:password@host:port/database URL")
    kafka = {key: value for key, value in (kafka_properties or {}).items() if key != "bootstrap.servers"}
    return {"CTR_JDBC_URL": f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}",
            "CTR_JDBC_USER": unquote(parts.username), "CTR_JDBC_PASSWORD": unquote(parts.password or ""),
            "CTR_KAFKA_PROPERTIES": json.dumps({k: v for k, v in kafka.items() if not is_secret(k)}, sort_keys=True),
            "CTR_KAFKA_SECRET_PROPERTIES": json.dumps({k: v for k, v in kafka.items() if is_secret(k)}, sort_keys=True)}


def submit(settings: FlinkSettings, job_args: list[str], savepoint: str | None = None,
           postgres_url: str | None = None, kafka_properties: Mapping[str, str] | None = None) -> str:
    """Submit flink/ctr_job.py to the cluster (detached) and return the job id.

    The sinks write to ``postgres_url`` (default: $POSTGRES_URL); the sources sign in with
    ``kafka_properties`` (:func:`flink_kafka_properties`; none: the broker asks no one to sign in),
    whose ``bootstrap.servers`` becomes ``--bootstrap-servers`` unless the job's arguments have one.
    Both reach the job in its environment (:func:`job_environment`), never on its command line.
    """
    postgres_url = postgres_url or os.environ.get("POSTGRES_URL")
    if not postgres_url:
        raise StackError("the CTR job writes to $POSTGRES_URL, which is not set; run `. scripts/local-env.sh` "
                         "after `make stack-start`")
    environment = job_environment(postgres_url, kafka_properties)  # a bad URL fails before the jars are fetched
    bootstrap = (kafka_properties or {}).get("bootstrap.servers")
    if bootstrap and "--bootstrap-servers" not in job_args:
        job_args = [*job_args, "--bootstrap-servers", bootstrap]
    jars = job_jars(settings)
    argv = [str(settings.flink_home / "bin" / "flink"), "run", "--detached", "-m", f"{settings.address}:{settings.rest_port}",
            "--python", str(JOB_SCRIPT)]
    if savepoint:
        argv += ["--fromSavepoint", savepoint]
    argv += ["--jars", ";".join(str(j) for j in jars), *job_args]
    # Neither the store's URL nor Airflow's connections (which may hold passwords) reach the client's logged environment.
    env = {key: value for key, value in os.environ.items()
           if key != "POSTGRES_URL" and not key.startswith("AIRFLOW_CONN_")}
    env.update(environment, FLINK_CONF_DIR=str(settings.conf_dir),
               FLINK_LOG_DIR=str(settings.home / "log"))
    write_config(settings)
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if "JobID" in line:
            return line.rsplit(" ", 1)[-1].strip()
    raise StackError(f"flink run did not submit the CTR job (exit {result.returncode}): {output[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.flink", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop", "restart", "status", "submit", "jars"])
    parser.add_argument("--savepoint", help="submit: resume from this savepoint (or retained checkpoint)")
    parser.add_argument("--client-config", type=Path, metavar="FILE",
                        help="submit: librdkafka settings, one key=value a line, for a broker that asks clients "
                             "to sign in (the job's sources get them as Java client properties)")
    parser.epilog = "submit: the arguments after -- are flink/ctr_job.py's"
    # Split at "--" by hand: a REMAINDER positional would swallow --savepoint and --client-config after "submit".
    argv = sys.argv[1:] if argv is None else list(argv)
    own, job_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    from include.errors import PipelineError

    cluster = FlinkCluster()
    try:
        if args.action in ("stop", "restart"):
            cluster.stop()
        if args.action in ("start", "restart"):
            began = time.monotonic()
            cluster.start()
            print(f"Flink ready in {time.monotonic() - began:.1f} s: {cluster.settings.rest_url}")
        if args.action == "status":
            rows = cluster.status()
            for name, pid, answers in rows:
                print(f"  {name:<18} {'running' if pid and answers else 'stopped'}  (pid {pid})")
            return 0 if all(pid and answers for _, pid, answers in rows) else 1
        if args.action == "jars":
            print("\n".join(str(j) for j in job_jars(cluster.settings)))
        if args.action == "submit":
            if "--topic" not in job_args:
                from include.kafka_admin.catalog import topic_for

                job_args = ["--topic", topic_for("raw"), *job_args]
            kafka_properties = None
            if args.client_config is not None:
                from include.kafka.client_file import client_settings

                bootstrap = {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]} \
                    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else {}
                kafka_properties = flink_kafka_properties({**bootstrap, **client_settings(args.client_config)})
            print(submit(cluster.settings, job_args, args.savepoint, kafka_properties=kafka_properties))
        return 0
    except StackError as error:
        print(f"devstack.flink: {error}", file=sys.stderr)
        return 1
    except PipelineError as error:  # a client settings file that is malformed or cannot be translated
        print(f"devstack.flink: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
