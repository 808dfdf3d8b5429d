"""Start, stop and report the local services, each a process with a pid file and a log."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import string
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack import probes
from devstack.javas import describe_available, find_java
from devstack.kafka_auth import MODES as KAFKA_AUTH_MODES, KafkaAuth, write_secret

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVSTACK_DIR = Path(__file__).resolve().parent


class StackError(RuntimeError):
    """A service cannot start or stop; the message is one sentence that says what and where."""


# In a cluster, node n's ports are this much times (n - 1) above node 1's (9092, 9192, 9292 ...).
KAFKA_NODE_PORT_STEP = 100


def _env_int(name: str, default: int, what: str = "a port number") -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not {what}") from None


@dataclass(frozen=True)
class StackSettings:
    """Where the stack lives and listens; every value can be overridden from the environment."""

    home: Path = field(
        default_factory=lambda: Path(os.environ.get("DEVSTACK_HOME") or PROJECT_ROOT / ".devstack")
    )
    host: str = "127.0.0.1"
    kafka_port: int = field(default_factory=lambda: _env_int("KAFKA_PORT", 9092))
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int("KAFKA_CONTROLLER_PORT", 9093)
    )
    registry_port: int = field(default_factory=lambda: _env_int("SCHEMA_REGISTRY_PORT", 8081))
    registry_management_port: int = field(
        default_factory=lambda: _env_int("SCHEMA_REGISTRY_MANAGEMENT_PORT", 8091)
    )
    s3_port: int = field(default_factory=lambda: _env_int("S3_PORT", 9000))
    # The broker's JMX exporter agent serves /metrics here for Prometheus to scrape.
    kafka_metrics_port: int = field(default_factory=lambda: _env_int("KAFKA_METRICS_PORT", 7071))
    prometheus_port: int = field(default_factory=lambda: _env_int("PROMETHEUS_PORT", 9090))
    pushgateway_port: int = field(default_factory=lambda: _env_int("PUSHGATEWAY_PORT", 9091))
    postgres_port: int = field(default_factory=lambda: _env_int("POSTGRES_PORT", 5432))
    # The Celery executor's broker (AIRFLOW_EXECUTOR=celery).
    redis_port: int = field(default_factory=lambda: _env_int("REDIS_PORT", 6379))
    # One node by default; 3 makes a cluster of three nodes, each broker and KRaft controller.
    kafka_brokers: int = field(default_factory=lambda: _env_int("KAFKA_BROKERS", 1))
    # none: PLAINTEXT, no ACLs. scram: SASL/SCRAM over TLS with the authorizer on (devstack/kafka_auth.py).
    kafka_auth: str = field(default_factory=lambda: os.environ.get("KAFKA_AUTH") or "none")
    kafka_heap: str = field(default_factory=lambda: os.environ.get("KAFKA_HEAP", "1g"))
    registry_heap: str = field(default_factory=lambda: os.environ.get("SCHEMA_REGISTRY_HEAP", "512m"))
    # The jars cache is shared by every checkout on this machine unless told otherwise, so a
    # fresh clone starts without fetching again.
    cache: Path = field(
        default_factory=lambda: Path(
            os.environ.get("DEVSTACK_CACHE") or Path.home() / ".cache" / "avazu-kafka-devstack"
        )
    )

    def __post_init__(self) -> None:
        if self.kafka_brokers not in (1, 3):
            raise StackError(f"KAFKA_BROKERS={self.kafka_brokers}: the stack runs 1 Kafka node or a cluster of 3")
        if self.kafka_auth not in KAFKA_AUTH_MODES:
            raise StackError(f"KAFKA_AUTH={self.kafka_auth!r}: choose one of {', '.join(KAFKA_AUTH_MODES)}")

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def kafka_node_ports(self, node: int) -> tuple[int, int, int]:
        """Client, controller and metrics ports of Kafka node ``node`` (1-based): node n listens
        ``KAFKA_NODE_PORT_STEP * (n - 1)`` above KAFKA_PORT, KAFKA_CONTROLLER_PORT and KAFKA_METRICS_PORT."""
        step = KAFKA_NODE_PORT_STEP * (node - 1)
        return self.kafka_port + step, self.kafka_controller_port + step, self.kafka_metrics_port + step

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def kafka_auth_files(self) -> KafkaAuth | None:
        """The CA, certificate and passwords of an authenticated Kafka (KAFKA_AUTH=scram), else None."""
        return KafkaAuth(self.home / "kafka-auth") if self.kafka_auth == "scram" else None


def _pom_property(pom: Path, name: str) -> str:
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if not match:
        raise StackError(f"{pom} does not declare <{name}>")
    return match.group(1).strip()


@contextlib.contextmanager
def _cache_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file <folder>.lock beside a cache folder while filling it.

    The cache is shared by every checkout, so two starts at the same moment would fetch into the
    same folder at once; the second waits here (saying why) and must then check again whether the
    first has already done the work. The lock file is left in place: deleting it would let a
    waiting process and a newcomer lock two different files.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f"{folder.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for another start fetching {what} into the cache ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # Closing the file (also when the process dies) releases the lock.
        yield


def _once(done: Path, lock_folder: Path, what: str, make: Callable[[], None]) -> None:
    """``make()`` the cache entry whose file ``done`` is missing, once however many starts ask.

    Under the cache lock of ``lock_folder``, and checked again once the lock is held: another
    start may have made it while this one waited.
    """
    if done.exists():
        return
    with _cache_lock(lock_folder, what):
        if not done.exists():
            make()


def _mvn(purpose: str) -> str:
    """Maven's path, or a StackError saying it is needed to ``purpose`` and how to get it."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(f"Maven (mvn) is needed to {purpose} but is not on PATH; install it (apt-get install maven)")
    return mvn


def _maven_fetch(pom: Path, target: Path, log: Path, what: str) -> None:
    """Resolve the pom's dependencies through Maven and copy them into target (once)."""
    done = target / ".complete"

    def fetch() -> None:
        mvn = _mvn(f"fetch {what} from Maven Central")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"  fetching {what} through Maven (first start only) ...", flush=True)
        with log.open("w") as out:
            result = subprocess.run(
                [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={target}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=pom.parent,
            )
        if result.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise StackError(
                f"fetching {what} with mvn failed (exit {result.returncode}); see {log}"
            )
        done.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    _once(done, target, what, fetch)


def _unpack_once(target: Path, marker: str, fetch: Callable[[Path], Path], what: str) -> None:
    """Unpack into target the tarball that fetch(download) leaves in a download folder beside it.

    Done once, under the cache lock of target's parent folder: the first start fetches and
    unpacks, one waiting for it then finds target/marker and does nothing. Target appears whole or
    not at all (unpacked beside it, then renamed), and the download is removed afterwards.
    """
    def unpack() -> None:
        download = target.with_name("download")
        tarball = fetch(download)
        staging = target.with_name(f"{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(staging, filter="data")
        # A target without its marker (a tarball that lacks it) would make the rename fail.
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        # The unpacked folder is all that is needed from now on.
        shutil.rmtree(download)

    _once(target / marker, target.parent, what, unpack)


class Service:
    """One local process: how to prepare it, start it and tell that it answers."""

    name = ""
    start_timeout = 60.0

    def __init__(self, settings: StackSettings):
        self.settings = settings

    # What each service provides.
    def ports(self) -> list[int]:
        raise NotImplementedError

    def endpoint(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        """Fetch and set up what the process needs; cheap when already done."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def run_as(self) -> dict:
        """Popen's user, group and extra_groups for a process that must not run as this user."""
        return {}

    def after_start(self) -> None:
        """Set up what needs the running process (a database, say); called once it answers."""

    def signal_stop(self, pid: int) -> None:
        """Ask the process to stop: SIGTERM to its whole process group."""
        os.killpg(pid, signal.SIGTERM)

    # Shared process handling.
    @property
    def state_dir(self) -> Path:
        """The service's own folder under the stack home (a service that keeps state uses it)."""
        return self.settings.home / self.name

    @property
    def log(self) -> Path:
        return self.settings.logs / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.settings.run / f"{self.name}.pid"

    @property
    def marker(self) -> bytes:
        """An environment entry that tells our process apart from any other (and from a recycled pid)."""
        return f"DEVSTACK_SERVICE={self.name}@{self.settings.home}".encode()

    def pid(self) -> int | None:
        """The pid of our process when it is alive, else None (and a stale pid file is removed).

        Ours is the pid in the pid file with the start time written beside it (a recycled pid has
        another one); a pid file without a start time is checked by the marker in the process's
        environment instead (a process that rewrites its title may overwrite that, hence the time).
        """
        try:
            pid_text, _, started = self.pidfile.read_text().strip().partition(" ")
            pid = int(pid_text)
            state, start_time = _proc_state(pid)
            ours = (started == start_time) if started else (
                self.marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except (OSError, ValueError, IndexError):
            self.pidfile.unlink(missing_ok=True)
            return None
        if state == "Z" or not ours:
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid

    def spawn(self) -> int:
        for port in self.ports():
            if probes.port_in_use(port, self.settings.host):
                raise StackError(
                    f"port {port} for {self.name} is already in use by a process devstack did not "
                    f"start; stop that process or choose another port ({self._port_hint(port)})"
                )
        self.prepare()
        argv, extra_env = self.command()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        marker_key, marker_value = self.marker.decode().split("=", 1)
        env = {**os.environ, **extra_env, marker_key: marker_value}
        with self.log.open("ab") as out:
            out.write(f"\n--- devstack start {time.ctime()}: {' '.join(argv)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.settings.home, start_new_session=True, **self.run_as(),
            )
        self.pidfile.write_text(f"{process.pid} {_proc_state(process.pid)[1]}")
        self._process = process
        return process.pid

    def _port_hint(self, port: int) -> str:
        return "see `python -m devstack env --help`"

    def wait_until_answers(self, deadline: float) -> None:
        process = getattr(self, "_process", None)
        while time.monotonic() < deadline:
            if self.answers():
                return
            if process is not None and process.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited during start-up (exit code {process.returncode}); "
                    f"see {self.log}"
                )
            if process is None and self.pid() is None:
                raise StackError(f"{self.name} stopped during start-up; see {self.log}")
            time.sleep(0.5)
        raise StackError(
            f"{self.name} did not answer on {self.endpoint()} within {self.start_timeout:.0f} s; "
            f"see {self.log}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop our process (TERM, then KILL after timeout). False when it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            self.signal_stop(pid)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.2)
        if self._alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._end_session(pid, timeout=min(timeout, 10.0))
        self.pidfile.unlink(missing_ok=True)
        return True

    @staticmethod
    def _end_session(session: int, timeout: float) -> None:
        """End what is left of the service's session once its process has gone (TERM, then KILL).

        The process was started in a session of its own, whose id is its pid; a child that moved
        to a process group of its own is out of reach of the group's signal but still in the
        session. Airflow's task processes do that (its supervisor's ``setpgid``), and a task that
        outlived its scheduler would otherwise run on with nothing to report to.
        """
        left = session_members(session)
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [pid for pid in left if Service._alive(pid)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
            tasks = len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            return False
        # A zombie main thread while other threads still exit: the process still holds its
        # sockets (the JMX agent's port is only closed then), so it is not gone yet.
        return state != "Z" or tasks > 1


def _cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's Uuid.randomUuid() makes them: one that does not start
    with "-", which the storage tool's command line would take for an option (about 1 in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def process_sessions() -> dict[int, int]:
    """The session id of every live process, by pid (field 6 of /proc/<pid>/stat)."""
    sessions = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                sessions[int(entry.name)] = int(fields[3])
    return sessions


def session_members(session: int) -> list[int]:
    """The pids of the live processes in ``session``."""
    return [pid for pid, member_of in process_sessions().items() if member_of == session]


def _proc_state(pid: int) -> tuple[str, str]:
    """A process's state letter and its start time (clock ticks after boot), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return fields[0], fields[19]


class KafkaBroker(Service):
    """Apache Kafka, one node acting as broker and KRaft controller (``kafka``), or node ``n`` of a
    cluster of three such nodes (``kafka-1`` .. ``kafka-3``, KAFKA_BROKERS=3) with a quorum of three
    controllers; each node has its own config, data folder, log and pid file."""

    name = "kafka"
    start_timeout = 90.0

    def __init__(self, settings: StackSettings, node: int = 1):
        super().__init__(settings)
        self.node = node
        self.clustered = settings.kafka_brokers > 1
        if self.clustered:
            self.name = f"kafka-{node}"
        self.port, self.controller_port, self.metrics_port = settings.kafka_node_ports(node)
    pom = DEVSTACK_DIR / "kafka" / "pom.xml"
    # Prometheus's JMX exporter, as a java agent in the broker's JVM. Its own pom and cache folder,
    # so machines whose Kafka jars are already cached fetch only the agent.
    agent_pom = DEVSTACK_DIR / "kafka" / "jmx-exporter.pom.xml"
    agent_rules = DEVSTACK_DIR / "kafka" / "jmx-exporter.yml"

    @property
    def version(self) -> str:
        return _pom_property(self.pom, "kafka.version")

    @property
    def libs(self) -> Path:
        return self.settings.cache / f"kafka-{self.version}" / "libs"

    @property
    def agent_version(self) -> str:
        return _pom_property(self.agent_pom, "jmx-exporter.version")

    @property
    def agent_jar(self) -> Path:
        return (self.settings.cache / f"jmx-exporter-{self.agent_version}"
                / f"jmx_prometheus_javaagent-{self.agent_version}.jar")

    @property
    def conf_dir(self) -> Path:
        return self.settings.home / self.name

    @property
    def data_dir(self) -> Path:
        return self.conf_dir / "data"

    def ports(self) -> list[int]:
        return [self.port, self.controller_port, self.metrics_port]

    def endpoint(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def metrics_endpoint(self) -> str:
        return f"{self.settings.host}:{self.metrics_port}"

    def _port_hint(self, port: int) -> str:
        name = {self.port: "KAFKA_PORT", self.controller_port: "KAFKA_CONTROLLER_PORT",
                self.metrics_port: "KAFKA_METRICS_PORT"}[port]
        return name if self.node == 1 else f"{name}, of which node {self.node} takes +{port - getattr(self.settings, name.lower())}"

    def _java(self) -> str:
        java = find_java(17, os.environ.get("KAFKA_JAVA_HOME"))
        if java is None:
            raise StackError(
                "Kafka needs Java 17 or newer but none was found (looked at KAFKA_JAVA_HOME, "
                f"JAVA_HOME, PATH and /usr/lib/jvm; saw {describe_available()}); "
                "install one (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
            )
        return java.path

    def _quorum(self) -> list[str]:
        """The cluster's settings that differ from one node's: its quorum and its replication."""
        s = self.settings
        if not self.clustered:
            return [
                f"controller.quorum.bootstrap.servers={s.host}:{self.controller_port}",
                # One node: internal topics cannot have more than one replica.
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
            ]
        voters = ",".join(f"{n}@{s.host}:{s.kafka_node_ports(n)[1]}" for n in range(1, s.kafka_brokers + 1))
        return [
            # A static quorum of every node's controller: any two of the three keep it going.
            f"controller.quorum.voters={voters}",
            # Three replicas, of which two must have a write (acks=all) before it counts.
            f"offsets.topic.replication.factor={s.kafka_brokers}",
            f"transaction.state.log.replication.factor={s.kafka_brokers}",
            "transaction.state.log.min.isr=2",
            f"share.coordinator.state.topic.replication.factor={s.kafka_brokers}",
            "share.coordinator.state.topic.min.isr=2",
            f"default.replication.factor={s.kafka_brokers}",
            "min.insync.replicas=2",
        ]

    def _listeners(self) -> list[str]:
        s = self.settings
        if s.kafka_auth_files:
            return s.kafka_auth_files.broker_properties(s.host, self.port, self.controller_port)
        return [
            f"listeners=PLAINTEXT://{s.host}:{self.port},CONTROLLER://{s.host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{s.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def _write_config(self) -> Path:
        s = self.settings
        conf_dir = self.conf_dir
        conf_dir.mkdir(parents=True, exist_ok=True)
        config = conf_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "# Written by devstack at every start; edit devstack/stack.py instead.",
                    "process.roles=broker,controller",
                    f"node.id={self.node}",
                    *self._listeners(),
                    f"log.dirs={self.data_dir}",
                    *self._quorum(),
                    # Topics are provisioned from the declarations, never created by a typo.
                    "auto.create.topics.enable=false",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=1",
                    "",
                ]
            )
        )
        log4j = conf_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "rootLogger.level=INFO",
                    "rootLogger.appenderRef.stdout.ref=STDOUT",
                    "appender.stdout.type=Console",
                    "appender.stdout.name=STDOUT",
                    "appender.stdout.layout.type=PatternLayout",
                    "appender.stdout.layout.pattern=[%d] %p %m (%c)%n",
                    # The state-change and request loggers are very chatty at INFO.
                    "logger.statechange.name=state.change.logger",
                    "logger.statechange.level=WARN",
                    "logger.kafkaController.name=kafka.controller",
                    "logger.kafkaController.level=WARN",
                    "",
                ]
            )
        )
        return config

    def prepare(self) -> None:
        java = self._java()
        _maven_fetch(self.pom, self.libs, self.settings.logs / "fetch-kafka.log",
                     f"Apache Kafka {self.version}")
        _maven_fetch(self.agent_pom, self.agent_jar.parent,
                     self.settings.logs / "fetch-jmx-exporter.log",
                     f"Prometheus's JMX exporter {self.agent_version}")
        if not self.agent_jar.is_file():
            raise StackError(f"fetching the JMX exporter left no {self.agent_jar.name} in "
                             f"{self.agent_jar.parent}; delete that folder and start again")
        auth = self.settings.kafka_auth_files
        if auth:
            auth.ensure()
        config = self._write_config()
        if auth:
            config.chmod(0o600)  # it holds admin's password: brokers sign in to each other with it
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.clustered:
            # Every node of a cluster is formatted with the same cluster id, kept beside them.
            id_file = self.settings.home / "kafka-cluster-id"
            if not id_file.exists():
                id_file.write_text(_cluster_id())
            cluster_id, quorum = id_file.read_text().strip(), []
        else:
            cluster_id, quorum = _cluster_id(), ["--standalone"]
        log = self.settings.logs / f"{self.name}-format.log"
        with log.open("w") as out:
            result = subprocess.run(
                [java, *self._jvm_flags(), "kafka.tools.StorageTool", "format",
                 *quorum, "-t", cluster_id, "-c", str(config),
                 *(auth.format_arguments() if auth else [])],
                stdout=out, stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed; see {log}")

    def _jvm_flags(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*",
        ]

    def command(self) -> tuple[list[str], dict[str, str]]:
        # The agent only in the broker's JVM (not in the storage format's, which would take the
        # port too); it is a shaded jar loaded by -javaagent, so it stays off Kafka's classpath.
        agent = f"-javaagent:{self.agent_jar}={self.metrics_endpoint()}:{self.agent_rules}"
        argv = [
            self._java(), "-Xms256m", f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true", agent,
            *self._jvm_flags(), "kafka.Kafka", str(self.conf_dir / "server.properties"),
        ]
        return argv, {}

    def answers(self) -> bool:
        auth = self.settings.kafka_auth_files
        tls = auth.probe_context() if auth and auth.ca_file.exists() else None
        if auth and tls is None:
            return False
        return probes.kafka_answers(self.port, self.settings.host, tls=tls)


class SchemaRegistry(Service):
    """Apicurio Registry with its Confluent-compatible API, storing schemas in an H2 file."""

    name = "schema-registry"
    start_timeout = 150.0
    pom = DEVSTACK_DIR / "registry" / "pom.xml"

    @property
    def version(self) -> str:
        return _pom_property(self.pom, "apicurio.version")

    @property
    def app_dir(self) -> Path:
        return self.settings.cache / f"apicurio-registry-{self.version}" / "app"

    def ports(self) -> list[int]:
        return [self.settings.registry_port, self.settings.registry_management_port]

    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.registry_port}/apis/ccompat/v7"

    def _port_hint(self, port: int) -> str:
        if port == self.settings.registry_port:
            return "SCHEMA_REGISTRY_PORT"
        return "SCHEMA_REGISTRY_MANAGEMENT_PORT"

    def _java(self) -> str:
        java = find_java(21, os.environ.get("REGISTRY_JAVA_HOME"))
        if java is None:
            raise StackError(
                f"Apicurio Registry {self.version} needs Java 21 or newer but none was found "
                f"(saw {describe_available(os.environ.get('REGISTRY_JAVA_HOME'))}); install a "
                "JDK 21+ and point REGISTRY_JAVA_HOME at it"
            )
        return java.path

    def prepare(self) -> None:
        self._java()
        what = f"Apicurio Registry {self.version}"

        def fetch(download: Path) -> Path:
            _maven_fetch(self.pom, download, self.settings.logs / "fetch-schema-registry.log", what)
            tarballs = list(download.glob("*.tar.gz"))
            if len(tarballs) != 1:
                raise StackError(
                    f"expected one Apicurio tarball in {download}, found {len(tarballs)}"
                )
            return tarballs[0]

        _unpack_once(self.app_dir, "quarkus-run.jar", fetch, what)

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        db = s.home / "schema-registry" / "registry"
        db.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            self._java(), f"-Xmx{s.registry_heap}", "-XX:+UseSerialGC",
            "-jar", str(self.app_dir / "quarkus-run.jar"),
        ]
        env = {
            "QUARKUS_HTTP_HOST": s.host,
            "QUARKUS_HTTP_PORT": str(s.registry_port),
            "QUARKUS_MANAGEMENT_HOST": s.host,
            "QUARKUS_MANAGEMENT_PORT": str(s.registry_management_port),
            # A file database, so schema ids stay valid for the records already in Kafka.
            "APICURIO_DATASOURCE_URL": f"jdbc:h2:file:{db}",
            "QUARKUS_LOG_CONSOLE_COLOR": "false",
        }
        return argv, env

    def answers(self) -> bool:
        return isinstance(probes.http_json(f"{self.endpoint()}/subjects"), list)


class S3Endpoint(Service):
    """moto's S3-compatible server (in memory: buckets go away when it stops)."""

    name = "s3"
    start_timeout = 60.0

    def ports(self) -> list[int]:
        return [self.settings.s3_port]

    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.s3_port}"

    def _port_hint(self, port: int) -> str:
        return "S3_PORT"

    def prepare(self) -> None:
        if importlib.util.find_spec("moto") is None:
            raise StackError(
                f"the S3 endpoint needs moto[server], which {sys.executable} does not have; "
                "run `make install` (or pip install -r requirements.txt)"
            )

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "moto.server", "-H", self.settings.host,
                "-p", str(self.settings.s3_port)], {}

    def answers(self) -> bool:
        return probes.http_ok(f"{self.endpoint()}/")


def _debian_binary(name: str, package: str, what: str) -> str:
    """The path of a program that a Debian package installs, or a StackError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"{what} but {name} is not installed (not on PATH); install Debian's package "
            f"(apt-get install {package})"
        )
    return path


class Pushgateway(Service):
    """Prometheus's Pushgateway (Debian's), where batch jobs such as the pipeline health check push."""

    name = "pushgateway"
    start_timeout = 30.0

    def ports(self) -> list[int]:
        return [self.settings.pushgateway_port]

    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.pushgateway_port}"

    def _port_hint(self, port: int) -> str:
        return "PUSHGATEWAY_PORT"

    def _binary(self) -> str:
        return _debian_binary("prometheus-pushgateway", "prometheus-pushgateway",
                              "Prometheus's Pushgateway is needed for the pipeline's pushed "
                              "health metrics")

    def prepare(self) -> None:
        self._binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [
            self._binary(),
            f"--web.listen-address={self.settings.host}:{self.settings.pushgateway_port}",
            # Pushed groups survive a restart, as the last successful health check must.
            f"--persistence.file={self.state_dir / 'metrics'}",
            "--persistence.interval=30s",
        ], {}

    def answers(self) -> bool:
        return probes.http_ok(f"{self.endpoint()}/-/ready")


class Prometheus(Service):
    """Prometheus (Debian's): scrapes the broker's JMX agent and the Pushgateway, evaluates alerts."""

    name = "prometheus"
    start_timeout = 60.0
    config_template = DEVSTACK_DIR / "prometheus" / "prometheus.yml"
    alert_rules = DEVSTACK_DIR / "prometheus" / "alerts.yml"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "prometheus.yml"

    def ports(self) -> list[int]:
        return [self.settings.prometheus_port]

    def endpoint(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prometheus_port}"

    def _port_hint(self, port: int) -> str:
        return "PROMETHEUS_PORT"

    def _binary(self) -> str:
        return _debian_binary("prometheus", "prometheus",
                              "Prometheus is needed for the metric checks")

    def write_config(self, path: Path | None = None) -> Path:
        """The template with this stack's addresses filled in, at path (default: the state folder)."""
        s = self.settings
        path = path or self.config_file
        path.parent.mkdir(parents=True, exist_ok=True)
        text = string.Template(self.config_template.read_text()).substitute(
            # Every node's agent: the template's one quoted target becomes a list of them.
            kafka_metrics='", "'.join(f"{s.host}:{s.kafka_node_ports(n)[2]}" for n in range(1, s.kafka_brokers + 1)),
            pushgateway=f"{s.host}:{s.pushgateway_port}",
            prometheus=f"{s.host}:{s.prometheus_port}",
            alert_rules=str(self.alert_rules),
        )
        path.write_text(text)
        return path

    def prepare(self) -> None:
        self._binary()
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        self.write_config()

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [
            self._binary(),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.state_dir / 'data'}",
            # A laptop's stack: a week of history is plenty.
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={self.settings.host}:{self.settings.prometheus_port}",
            # POST /-/reload picks up an edited alerts.yml without a restart.
            "--web.enable-lifecycle",
        ], {}

    def answers(self) -> bool:
        return probes.http_ok(f"{self.endpoint()}/-/ready")


class Redis(Service):
    """Redis (Debian's redis-server): the Celery executor's broker when Airflow runs Celery workers
    (AIRFLOW_EXECUTOR=celery).

    It listens on loopback only and asks for a password generated at its first start into a file
    only its owner reads, as PostgreSQL's roles do; the password goes in its config file, never on
    a command line. Queued tasks are kept in an append-only file in its data folder, so a restart
    loses none.
    """

    name = "redis"
    start_timeout = 30.0

    @property
    def password_file(self) -> Path:
        return self.state_dir / "redis.password"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "redis.conf"

    def ports(self) -> list[int]:
        return [self.settings.redis_port]

    def endpoint(self) -> str:
        return f"redis://{self.settings.host}:{self.settings.redis_port}"

    def url(self, db: int = 0) -> str:
        """The broker URL of database ``db`` with the password (without it before the first start)."""
        s = self.settings
        password = f":{self._password()}@" if self.password_file.exists() else ""
        return f"redis://{password}{s.host}:{s.redis_port}/{db}"

    def _password(self) -> str:
        return self.password_file.read_text().strip()

    def _port_hint(self, port: int) -> str:
        return "REDIS_PORT"

    def _binary(self) -> str:
        return _debian_binary("redis-server", "redis-server",
                              "Redis is needed as the broker of Airflow's Celery workers")

    def prepare(self) -> None:
        self._binary()
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        write_secret(self.password_file)
        # Written at every start (a new REDIS_PORT needs no edit), readable by its owner only.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join([
                "# Written by devstack at every start; edit devstack/stack.py instead.",
                f"bind {self.settings.host}",
                f"port {self.settings.redis_port}",
                "daemonize no",
                'logfile ""',
                f"dir {self.state_dir / 'data'}",
                "appendonly yes",
                'save ""',
                f"requirepass {self._password()}",
                "",
            ]))

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [self._binary(), str(self.config_file)], {}

    def answers(self) -> bool:
        password = self._password() if self.password_file.exists() else None
        return probes.redis_answers(self.settings.redis_port, self.settings.host, password)


# Debian installs each PostgreSQL major version's server programs in <major>/bin here.
POSTGRES_LIB = Path("/usr/lib/postgresql")
# A root devstack whose home its server user cannot enter keeps the server's folders here.
SHARED_SERVER_ROOT = Path("/var/tmp/avazu-devstack")


class Postgres(Service):
    """PostgreSQL (Debian's server programs): the store the real-time CTR figures are served from,
    and Airflow's metadata database when the Celery executor is chosen (AIRFLOW_EXECUTOR=celery).

    A cluster of its own under the stack home with a role and a database both named ``ctr``, and
    another pair named ``airflow``; each role's password is generated into a file of its own. It
    listens on loopback only and keeps its socket in its state folder (/var/run/postgresql is
    root's). PostgreSQL refuses to run as root, so a root devstack runs it as the postgres user.
    """

    name = "postgres"
    start_timeout = 60.0
    database = "ctr"
    role = "ctr"
    # Every role owns the database of its name, made at each start when missing.
    roles = ("ctr", "airflow")
    # The cluster's superuser, reached without a password through the socket folder only (mode 0700).
    superuser = "postgres"
    # Whom a root devstack runs the server as; Debian's package creates this user.
    os_user = "postgres"

    @property
    def server_dir(self) -> Path:
        """Where the server's own folders live: the state folder, unless a root devstack's server
        user cannot enter it (a checkout under a private temporary folder, as CI's): then a folder
        of this stack's own under /var/tmp, named after the stack home."""
        owner = self.run_as()
        if not owner or self._reachable(owner["user"], owner["group"]):
            return self.state_dir
        digest = hashlib.sha256(str(self.settings.home.resolve()).encode()).hexdigest()[:12]
        return SHARED_SERVER_ROOT / f"postgres-{digest}"

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.server_dir / "run"

    @property
    def password_file(self) -> Path:
        return self.password_file_of(self.role)

    def password_file_of(self, role: str) -> Path:
        return self.state_dir / f"{role}.password"

    def ports(self) -> list[int]:
        return [self.settings.postgres_port]

    def endpoint(self) -> str:
        return f"postgresql://{self.settings.host}:{self.settings.postgres_port}/{self.database}"

    def url(self, role: str | None = None, database: str | None = None, scheme: str = "postgresql") -> str:
        """A database's URL (default: ctr's) with its role's password (without it before the first start)."""
        s = self.settings
        role = role or self.role
        file = self.password_file_of(role)
        password = f":{file.read_text().strip()}" if file.exists() else ""
        return f"{scheme}://{role}{password}@{s.host}:{s.postgres_port}/{database or role}"

    def _port_hint(self, port: int) -> str:
        return "POSTGRES_PORT"

    def bin_dir(self) -> Path:
        """The newest PostgreSQL major version's bin folder that has the server programs."""
        installed = [d for d in POSTGRES_LIB.glob("*/bin")
                     if d.parent.name.isdigit() and (d / "postgres").is_file() and (d / "initdb").is_file()]
        if not installed:
            raise StackError(
                "PostgreSQL is needed for the real-time CTR store but its server is not installed "
                f"(no {POSTGRES_LIB}/<major>/bin/postgres); install Debian's package "
                "(apt-get install postgresql)"
            )
        return max(installed, key=lambda d: int(d.parent.name))

    def run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            user = pwd.getpwnam(self.os_user)
        except KeyError:
            raise StackError(
                f"PostgreSQL refuses to run as root and there is no {self.os_user} user to run it "
                "as; install Debian's package (apt-get install postgresql), which creates it"
            ) from None
        # No supplementary groups: root's must not come along.
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _reachable(self, uid: int, gid: int) -> bool:
        """Whether the server's user can enter every folder down to the state folder (root can, it may not)."""
        for folder in (self.state_dir, *self.state_dir.parents):
            if not folder.exists():
                continue
            info = folder.stat()
            bit = (stat.S_IXUSR if info.st_uid == uid else stat.S_IXGRP if info.st_gid == gid
                   else stat.S_IXOTH)
            if not info.st_mode & bit:
                return False
        return True

    def _write_password(self) -> None:
        for role in self.roles:
            write_secret(self.password_file_of(role))

    def initdb_command(self) -> list[str]:
        return [
            str(self.bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
            "--encoding=UTF8", "--no-locale",
            # Over TCP only with a password; the socket needs none, as its folder is closed to others.
            "--auth-local=trust", "--auth-host=scram-sha-256",
        ]

    def prepare(self) -> None:
        self.bin_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_password()
        owner = self.run_as()
        self.server_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o700)
            if owner:
                os.chown(folder, owner["user"], owner["group"])
        if (self.data_dir / "PG_VERSION").exists():
            return
        log = self.settings.logs / "postgres-initdb.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            result = subprocess.run(self.initdb_command(), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **owner)
        if result.returncode != 0:
            # initdb refuses a folder that is not empty, so a half-made one would block every retry.
            for entry in self.data_dir.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            raise StackError(f"initialising PostgreSQL's data folder {self.data_dir} failed; see {log}")

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        # Command-line settings win over postgresql.conf, so a new POSTGRES_PORT needs no rewrite.
        return [
            str(self.bin_dir() / "postgres"), "-D", str(self.data_dir),
            "-c", f"listen_addresses={s.host}",
            "-c", f"port={s.postgres_port}",
            "-c", f"unix_socket_directories={self.socket_dir}",
        ], {}

    def answers(self) -> bool:
        return probes.postgres_answers(self.settings.postgres_port, self.settings.host)

    def after_start(self) -> None:
        """Create each role and its database when missing and set the role's password from its file."""
        # A server started by an older checkout has no file yet for a role added since.
        self._write_password()
        script = ""
        for role in self.roles:
            password = self.password_file_of(role).read_text().strip()
            script += (
                f"SELECT 'CREATE ROLE {role} LOGIN' WHERE NOT EXISTS "
                f"(SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec\n"
                # The password goes through stdin: on psql's command line any user could read it.
                f"ALTER ROLE {role} PASSWORD '{password}';\n"
                + self._create_database_sql(role, role)
            )
        self._psql(script, f"creating the roles and databases {', '.join(self.roles)}")

    def create_database(self, database: str, owner: str) -> None:
        """Create a database owned by one of the roles when missing (a test's Airflow metadata, say)."""
        self._psql(self._create_database_sql(database, owner), f"creating the database {database}")

    def drop_database(self, database: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self._psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE);\n", f"dropping the database {database}")

    @staticmethod
    def _create_database_sql(database: str, owner: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
            raise StackError(f"{database!r} is not a plain database name (lower-case letters, digits and _)")
        return (f"SELECT 'CREATE DATABASE {database} OWNER {owner}' WHERE NOT EXISTS "
                f"(SELECT FROM pg_database WHERE datname = '{database}')\\gexec\n")

    def _psql(self, script: str, what: str) -> None:
        """Run a script as the cluster's superuser through the socket folder; fail in one sentence."""
        result = subprocess.run(
            [str(self.bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.settings.postgres_port),
             "-U", self.superuser, "-d", "postgres"],
            input=script, text=True, capture_output=True,
        )
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise StackError(f"{what} in PostgreSQL failed: {reason}")

    def signal_stop(self, pid: int) -> None:
        # SIGINT is PostgreSQL's fast shutdown: clients are disconnected rather than waited for,
        # and only the postmaster is told (it stops its own children).
        os.kill(pid, signal.SIGINT)


SERVICE_TYPES: dict[str, type[Service]] = {
    cls.name: cls for cls in (KafkaBroker, SchemaRegistry, S3Endpoint, Pushgateway, Prometheus, Postgres, Redis)
}


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    answers: bool
    endpoint: str
    log: Path

    @property
    def state(self) -> str:
        if self.pid and self.answers:
            return "running"
        if self.pid:
            return "starting or stuck"
        if self.answers:
            return "answering, but not started by devstack"
        return "stopped"


class Stack:
    """The set of local services, addressed by name."""

    def __init__(self, settings: StackSettings | None = None):
        self.settings = settings or StackSettings()
        self.services: dict[str, Service] = {}
        for name, cls in SERVICE_TYPES.items():
            if cls is KafkaBroker:
                for node in range(1, self.settings.kafka_brokers + 1):
                    broker = KafkaBroker(self.settings, node)
                    self.services[broker.name] = broker
            else:
                self.services[name] = cls(self.settings)

    @property
    def brokers(self) -> list[KafkaBroker]:
        return [s for s in self.services.values() if isinstance(s, KafkaBroker)]

    def select(self, names: list[str] | None) -> list[Service]:
        if not names:
            return list(self.services.values())
        # "kafka" is every node of a cluster, as it is the one node of a single broker.
        names = [b.name for n in names for b in (self.brokers if n == "kafka" else [])] + [n for n in names if n != "kafka"]
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise StackError(
                f"unknown service {', '.join(unknown)}; choose from {', '.join(dict.fromkeys(['kafka', *self.services]))}"
            )
        return [self.services[n] for n in dict.fromkeys(names)]

    def start(self, names: list[str] | None = None, echo=print) -> list[ServiceStatus]:
        """Start what is not running and wait until every service answers. Idempotent."""
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        waiting: list[Service] = []
        for service in self.select(names):
            if service.pid() is not None:
                if service.answers():
                    echo(f"  {service.name}: already running")
                    # Idempotent: what a newer checkout sets up (a database role, say) is added.
                    service.after_start()
                    continue
                echo(f"  {service.name}: process is up, waiting for it to answer")
            else:
                echo(f"  {service.name}: starting")
                service.spawn()
            waiting.append(service)
        for service in waiting:
            service.wait_until_answers(time.monotonic() + service.start_timeout)
            service.after_start()
        return self.status(names)

    def stop(self, names: list[str] | None = None, echo=print) -> None:
        for service in self.select(names):
            if service.stop():
                echo(f"  {service.name}: stopped")
            else:
                echo(f"  {service.name}: was not running")

    def status(self, names: list[str] | None = None) -> list[ServiceStatus]:
        return [
            ServiceStatus(s.name, s.pid(), s.answers(), s.endpoint(), s.log)
            for s in self.select(names)
        ]

    def environment(self) -> dict[str, str]:
        """The variables that point clients at this stack."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(b.endpoint() for b in self.brokers),
            "SCHEMA_REGISTRY_URL": self.services["schema-registry"].endpoint(),
            "S3_ENDPOINT_URL": self.services["s3"].endpoint(),
            "PROMETHEUS_URL": self.services["prometheus"].endpoint(),
            "PUSHGATEWAY_URL": self.services["pushgateway"].endpoint(),
            # Holds the ctr role's password: `python -m devstack env` prints it redacted.
            "POSTGRES_URL": self.services["postgres"].url(),
            # Holds Redis's password, printed redacted too.
            "REDIS_URL": self.services["redis"].url(),
        }
