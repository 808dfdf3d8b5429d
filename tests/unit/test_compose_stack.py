"""The compose stack and the Dockerfile agree with the lock, with the code and with each other.

There is no Docker engine in the test environment, so the files are parsed and every name, port,
URL, option and command in them is checked against what the project and the installed Airflow
expect.
"""

from __future__ import annotations

import fnmatch
import json
import re
import os
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.airflow.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"
LOCAL_ENV = ROOT / "scripts" / "local-env.sh"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"

ONE_SHOT = {"airflow-init", "minio-init", "jmx-agent-init", "flink-state-init"}
AIRFLOW_SERVICES = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker",
}
PROJECT_DIRS = ("dags", "plugins", "include", "schemas", "scripts", "flink", "devstack")
FLINK_REQUIREMENTS = ROOT / "flink" / "requirements.txt"
FLINK_SERVICES = ("flink-jobmanager", "flink-taskmanager")
IMAGE_HOME = "/opt/airflow"


# The secrets compose requires (`${NAME:?...}`), as scripts/compose-secrets.sh writes them.
SECRETS_SCRIPT = ROOT / "scripts" / "compose-secrets.sh"
REQUIRED = re.compile(r"(?<!\$)\$\{(\w+):\?[^}]*\}")


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, str]:
    """The .env the secrets script writes in a fresh folder."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    subprocess.run(["bash", str(SECRETS_SCRIPT)], env={**os.environ, "COMPOSE_ENV_FILE": str(env_file)},
                   check=True, capture_output=True, text=True)
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines())


def _interpolate(value: str, variables: dict[str, str] | None = None) -> str:
    """What compose makes of a value: defaults where no variable is set, required secrets from
    ``variables`` (a placeholder without them), and `$$` as `$`."""
    value = REQUIRED.sub(lambda m: (variables or {}).get(m.group(1), f"secret-{m.group(1).lower()}"), value)
    value = re.sub(r"(?<!\$)\$\{\w+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line, continuations joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _copies() -> list[tuple[str, str]]:
    """(source, destination) of every single-source COPY, flags such as --chown dropped."""
    pairs = []
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY":
            paths = [token for token in shlex.split(arguments) if not token.startswith("--")]
            pairs.extend((source, paths[-1]) for source in paths[:-1])
    return pairs


def _published(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port."""
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            result.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        assert isinstance(entry, str), f"port {entry!r} must be quoted (YAML 1.1 reads some a:b as base 60)"
        parts = entry.split("/")[0].rsplit(":", 2)
        if len(parts) == 1:
            continue  # container port only: Docker picks a free host port
        ip, port, container = ["", *parts] if len(parts) == 2 else parts
        result.append((ip, int(port), int(container)))
    return result


def _binds(service: dict) -> dict[str, str]:
    """{container path: source} of every volume, with a bind mount's source relative to the project."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        mounts[target] = source
    return mounts


def _flags(command: list[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}."""
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka's `NAME://host:port,...` as {NAME: (host, port)}."""
    result = {}
    for entry in value.split(","):
        name, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


@pytest.fixture(scope="module")
def airflow_env(services) -> dict:
    """The x-airflow-common environment, as the long-running Airflow services get it."""
    return services["airflow-scheduler"]["environment"]


@pytest.fixture(scope="module")
def airflow_cli():
    """Parse an airflow command line with the installed Airflow's own parser."""
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()

    def parse(argv: list[str]):
        assert argv, "empty command"
        try:
            return parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"`airflow {shlex.join(argv)}` is not a command of the installed Airflow")

    return parse


@pytest.fixture(scope="module")
def init_script(services) -> str:
    command = services["airflow-init"]["command"]
    assert command[:2] == ["bash", "-c"], "airflow-init runs one bash script"
    return _interpolate(command[2])


@pytest.fixture(scope="module")
def init_connections(init_script, airflow_cli) -> dict:
    """{conn_id: parsed arguments} of every `airflow connections add` in airflow-init."""
    connections = {}
    for line in init_script.splitlines():
        if line.startswith("airflow connections add "):
            args = airflow_cli(shlex.split(line)[1:])
            assert args.conn_id not in connections, f"{args.conn_id} is added twice"
            connections[args.conn_id] = args
    return connections


def test_dockerfile_builds_on_the_locked_airflow_and_python():
    # Every stage (the C codec's build and the image itself) is the same official image.
    images = {arguments.split()[0] for keyword, arguments in _dockerfile_instructions() if keyword == "FROM"}
    (image,) = images
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[\d.]+)-python(?P<python>\d+\.\d+)", image)
    assert match, f"FROM {image} is not an official apache/airflow:<version>-python<x.y> image"
    lock = REQUIREMENTS.read_text()
    locked = re.search(r"^apache-airflow==(\S+)$", lock, re.MULTILINE)
    assert locked and match["airflow"] == locked[1]
    header = "".join(line for line in lock.splitlines() if line.startswith("#"))
    assert f"Python {match['python']}" in header, "the lock was resolved for another Python"


def test_dockerfile_installs_the_lock_without_changing_airflow():
    instructions = _dockerfile_instructions()
    (destination,) = [dest for source, dest in _copies() if source == "requirements.txt"]
    if destination.endswith("/"):
        destination += "requirements.txt"
    (copied_at,) = [i for i, (keyword, arguments) in enumerate(instructions)
                    if keyword == "COPY" and "requirements.txt" in arguments]
    # The lock's install (the Flink client's stage installs PyFlink into a venv of its own).
    installs = [(i, shlex.split(arguments)) for i, (keyword, arguments) in enumerate(instructions)
                if keyword == "RUN" and "pip install" in arguments and destination in shlex.split(arguments)]
    assert len(installs) == 1
    installed_at, tokens = installs[0]
    assert installed_at > copied_at
    assert tokens[tokens.index("-r") + 1] == destination
    assert "apache-airflow==${AIRFLOW_VERSION}" in tokens
    assert "--no-cache-dir" in tokens
    # The official image installs packages as the airflow user (into its ~/.local), never as root.
    users = [arguments for keyword, arguments in instructions[:installed_at] if keyword == "USER"]
    assert users[-1:] in ([], ["airflow"])


def test_dockerfile_builds_the_c_codec_and_installs_its_wheel_with_the_lock():
    instructions = _dockerfile_instructions()
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) == 3 and instructions[stages[0]][1].split()[1:] == ["AS", "rowcodec"]
    build = instructions[stages[0]:stages[1]]
    assert ("COPY", "--chown=airflow:0 native/ /tmp/native/") in build
    assert any(keyword == "RUN" and "pip wheel" in arguments and "/tmp/native" in arguments for keyword, arguments in build)
    final = instructions[stages[-1]:]
    assert ("COPY", "--from=rowcodec /tmp/wheels/ /tmp/wheels/") in final
    (install,) = [arguments for keyword, arguments in final if keyword == "RUN" and "pip install" in arguments]
    assert "/tmp/wheels/avazu_rowcodec-*.whl" in shlex.split(install)


def test_dockerfile_ships_the_project_and_makes_include_importable():
    copies = {source.rstrip("/"): dest.rstrip("/") for source, dest in _copies()}
    for name in PROJECT_DIRS:
        assert copies.get(name) == f"{IMAGE_HOME}/{name}", f"{name}/ is not copied to {IMAGE_HOME}"
    env = [arguments for keyword, arguments in _dockerfile_instructions() if keyword == "ENV"]
    pythonpath = [a.split("=", 1)[1] for a in env if a.startswith("PYTHONPATH=")]
    assert pythonpath and IMAGE_HOME in pythonpath[-1].split(":")


def test_compose_mounts_the_project_where_the_image_has_it(services):
    for name in AIRFLOW_SERVICES:
        mounts = dict(entry.split(":")[:2] for entry in services[name]["volumes"])
        for directory in ("dags", "plugins", "include", "schemas", "data"):
            # include/storage.py resolves data/... against the project root, /opt/airflow here.
            assert mounts.get(f"./{directory}") == f"{IMAGE_HOME}/{directory}", (name, directory)


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_needs():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert {".venv", ".devstack", ".airflow", "data", "out", ".git"} <= set(patterns)
    assert any(fnmatch.fnmatch("include/avazu/__pycache__", p) for p in patterns)
    for source, _ in _copies():
        excluded = [p for p in patterns if fnmatch.fnmatch(source.rstrip("/"), p)]
        assert not excluded, f"{source} is copied by the Dockerfile but excluded by {excluded}"


def test_every_long_running_service_has_a_healthcheck(services):
    assert ONE_SHOT <= services.keys()
    unchecked = [name for name, service in services.items()
                 if name not in ONE_SHOT and not service.get("healthcheck", {}).get("test")]
    assert not unchecked
    for name in ONE_SHOT:
        # A restarted one-shot job never counts as completed for the services waiting on it.
        assert services[name].get("restart", "no") == "no", name


def test_every_dependency_waits_on_a_condition(services):
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: a list of dependencies waits for nothing"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = ("service_completed_successfully" if dependency in ONE_SHOT
                        else "service_healthy")
            assert spec.get("condition") == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                assert services[dependency].get("healthcheck"), dependency


def test_airflow_services_run_the_project_image_after_airflow_init(services):
    assert {name for name in services if name.startswith("airflow-")} == AIRFLOW_SERVICES
    sources = set()
    for name in AIRFLOW_SERVICES:
        build = services[name].get("build")
        if build is None:
            sources.add(("image", services[name]["image"]))
        else:
            build = {"context": build} if isinstance(build, str) else build
            sources.add(("build", build["context"], build.get("dockerfile", "Dockerfile")))
        if name != "airflow-init":
            condition = services[name]["depends_on"]["airflow-init"]["condition"]
            assert condition == "service_completed_successfully", name
    assert sources == {("build", ".", "Dockerfile")}


def test_airflow_init_creates_exactly_the_connections_the_code_uses(init_connections, init_script):
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook
    from kafka_pipeline.triggers import DLQ_WATCH_CONN_ID

    from dags.kafka_provisioning import ADMIN_CONNECTION

    # The CTR store is reached through the Postgres provider's hook and its default connection;
    # kafka_provisioning signs in as the cluster's admin.
    hook_ids = {KafkaClusterHook.default_conn_name, SchemaRegistryHook.default_conn_name, DLQ_WATCH_CONN_ID,
                PostgresHook.default_conn_name, ADMIN_CONNECTION}
    local_ids = {name.lower() for name in
                 re.findall(r"\bAIRFLOW_CONN_([A-Z0-9_]+)=", LOCAL_ENV.read_text())}
    assert set(init_connections) == hook_ids == local_ids
    assert init_connections[KafkaClusterHook.default_conn_name].conn_type == KafkaClusterHook.conn_type
    assert init_connections[DLQ_WATCH_CONN_ID].conn_type == KafkaClusterHook.conn_type
    assert init_connections[ADMIN_CONNECTION].conn_type == KafkaClusterHook.conn_type
    assert (init_connections[SchemaRegistryHook.default_conn_name].conn_type
            == SchemaRegistryHook.conn_type)
    # `connections add` keeps an existing connection, so each one is deleted first.
    lines = init_script.splitlines()
    for conn_id in init_connections:
        deleted = [i for i, line in enumerate(lines) if f"airflow connections delete {conn_id} " in line]
        added = [i for i, line in enumerate(lines) if f"airflow connections add {conn_id} " in line]
        assert deleted and added and deleted[0] < added[0], conn_id


def test_ctr_store_connection_is_the_ctr_database_beside_the_metadata_db(services, init_connections,
                                                                        init_script, airflow_env):
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    assert init_connections["postgres_default"].conn_uri == "${POSTGRES_URL}"
    connection = Connection(uri=_interpolate(airflow_env["POSTGRES_URL"]))
    assert connection.conn_type == PostgresHook.conn_type
    assert (connection.host, connection.port, connection.login, connection.schema) == ("postgres", 5432, "ctr", "ctr")
    assert "postgres" in services and "python -m include.ctr.migrate" in init_script.splitlines()
    # On the host the same variable and connection come from devstack's cluster.
    assert re.search(r"^\s*export AIRFLOW_CONN_POSTGRES_DEFAULT=\"\$POSTGRES_URL\"$", LOCAL_ENV.read_text(), re.MULTILINE)


def test_kafka_connection_uses_the_brokers_internal_listener(services, init_connections, airflow_env):
    kafka = services["kafka"]["environment"]
    internal = kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    host, port = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])[internal]
    assert host == "kafka" and "kafka" in services
    assert _listeners(kafka["KAFKA_LISTENERS"])[internal][1] == port
    bootstrap = f"{host}:{port}"
    assert json.loads(init_connections["kafka_default"].conn_extra) == {"bootstrap.servers": bootstrap}
    assert airflow_env["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    registry = services["schema-registry"]["environment"]
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == f"PLAINTEXT://{bootstrap}"
    assert bootstrap in " ".join(services["kafka"]["healthcheck"]["test"])


def test_kafka_is_one_node_reachable_from_the_host_that_never_auto_creates_topics(services):
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(kafka["KAFKA_LISTENERS"])
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{kafka['KAFKA_NODE_ID']}@kafka:{listeners[controller][1]}")
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    factors = {key: value for key, value in kafka.items() if key.endswith("REPLICATION_FACTOR")}
    assert factors and set(factors.values()) == {1}
    published = {host_port: container for _, host_port, container in _published(services["kafka"])}
    advertised = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    host_listeners = [name for name, (host, _) in advertised.items() if host == "localhost"]
    assert host_listeners
    for name in host_listeners:
        # A host client is sent to localhost:<port>, which must reach that listener.
        assert published.get(advertised[name][1]) == listeners[name][1], name


def test_schema_registry_connection_matches_the_registry_service(services, init_connections,
                                                                airflow_env):
    url = init_connections["schema_registry_default"].conn_host
    parts = urlsplit(url)
    assert parts.hostname == "schema-registry" and parts.hostname in services
    registry = services["schema-registry"]
    assert parts.port == urlsplit(registry["environment"]["SCHEMA_REGISTRY_LISTENERS"]).port
    assert parts.port in {container for _, _, container in _published(registry)}
    assert airflow_env["SCHEMA_REGISTRY_URL"] == url
    assert f"localhost:{parts.port}/subjects" in " ".join(registry["healthcheck"]["test"])


def test_s3_endpoint_is_minio_with_its_root_credentials(services, airflow_env):
    endpoint = urlsplit(airflow_env["S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.hostname in services
    minio = services["minio"]
    command = minio["command"]
    assert command[command.index("--address") + 1] == f":{endpoint.port}"
    assert endpoint.port in {container for _, _, container in _published(minio)}
    assert airflow_env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert airflow_env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    init = services["minio-init"]
    assert init["environment"] == minio["environment"]
    script = _interpolate(" ".join(init["command"]))
    assert f"alias set stack {airflow_env['S3_ENDPOINT_URL']} " in script
    assert "mc mb --ignore-existing stack/avazu" in script


def test_published_host_ports_do_not_collide(services):
    seen: dict[int, str] = {}
    for name, service in services.items():
        for _, host_port, _ in _published(service):
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name
    assert {9092, 8081, 9000, 8080, 9090, 9091, 8082} <= seen.keys()


def test_airflow_commands_exist_in_the_installed_cli(services, airflow_cli):
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        command = services[name]["command"]
        airflow_cli(command if isinstance(command, list) else shlex.split(command))
        test = services[name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL" and test[1].startswith("airflow "):
            args = airflow_cli(shlex.split(_interpolate(test[1]))[1:])
            assert args.hostname == "${HOSTNAME}", "each container checks its own job"


def test_airflow_settings_are_options_of_the_installed_airflow(services):
    from airflow.configuration import retrieve_configuration_description

    # The Celery executor's options ([celery]) are its provider's.
    description = retrieve_configuration_description(include_providers=True)
    for name in AIRFLOW_SERVICES:
        for variable in services[name]["environment"]:
            if variable.startswith("AIRFLOW__"):
                section, _, option = variable[len("AIRFLOW__"):].lower().partition("__")
                assert option in description.get(section, {}).get("options", {}), variable


def test_every_airflow_component_shares_the_secrets_and_the_api_server(services, airflow_env):
    from cryptography.fernet import Fernet

    shared = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
              "AIRFLOW__API__SECRET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
              "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert {key: env.get(key) for key in shared} == {key: airflow_env[key] for key in shared}, name
    assert REQUIRED.fullmatch(airflow_env["AIRFLOW__CORE__FERNET_KEY"])  # no default key
    assert _interpolate(airflow_env["AIRFLOW__CORE__EXECUTOR"]) == "LocalExecutor"  # unless the celery profile's

    execution = urlsplit(airflow_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    apiserver = services["airflow-apiserver"]
    assert execution.hostname == "airflow-apiserver" and execution.path == "/execution/"
    assert execution.port in {container for _, _, container in _published(apiserver)}
    assert f"localhost:{execution.port}/api/v2/version" in " ".join(apiserver["healthcheck"]["test"])

    database = urlsplit(_interpolate(airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres"
    assert (database.username, database.password, database.path.lstrip("/")) == (
        postgres["POSTGRES_USER"], _interpolate(postgres["POSTGRES_PASSWORD"]), postgres["POSTGRES_DB"])


def test_scheduler_health_check_is_served_where_it_is_probed(services, airflow_env):
    from airflow.configuration import retrieve_configuration_description

    options = retrieve_configuration_description(include_providers=False)["scheduler"]["options"]
    port = options["scheduler_health_check_server_port"]["default"]
    assert airflow_env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    test = services["airflow-scheduler"]["healthcheck"]["test"]
    assert f"http://localhost:{port}/health" in test


def test_ui_password_file_is_written_by_init_where_the_api_server_reads_it(services, init_script,
                                                                         airflow_env):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    assert airflow_env["AIRFLOW__CORE__AUTH_MANAGER"] == (
        f"{SimpleAuthManager.__module__}.{SimpleAuthManager.__qualname__}")
    users = dict(user.split(":")[:2] for user in
                 airflow_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert users == {"admin": "admin"}
    written = re.findall(r"json\.dumps\(\{\"(\w+)\": os\.environ\[\"(\w+)\"\]\}\)", init_script)
    assert written == [("admin", "AIRFLOW_ADMIN_PASSWORD")]
    assert REQUIRED.fullmatch(services["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"]).group(1) == (
        "AIRFLOW_ADMIN_PASSWORD")
    assert '> "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"' in init_script

    folder = str(Path(airflow_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent)
    volumes = yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]

    def mounted_at(name: str) -> str:
        (source,) = [entry.split(":")[0] for entry in services[name]["volumes"]
                     if entry.split(":")[1] == folder]
        return source

    # The same named volume in both containers (a bind mount would need a host folder).
    assert mounted_at("airflow-init") == mounted_at("airflow-apiserver")
    assert mounted_at("airflow-apiserver") in volumes


@pytest.fixture(scope="module")
def compose_prometheus(services) -> dict:
    """The Prometheus config the prometheus service reads, from the repository file mounted there."""
    source = _binds(services["prometheus"])[PROMETHEUS_CONFIG]
    return yaml.safe_load((ROOT / source).read_text())


def _scrape_target(config: dict, job: str) -> tuple[str, int]:
    (scrape,) = [entry for entry in config["scrape_configs"] if entry["job_name"] == job]
    (target,) = scrape["static_configs"][0]["targets"]
    host, _, port = target.rpartition(":")
    return host, int(port)


def test_prometheus_and_pushgateway_run_official_images_on_the_repositorys_files(services):
    from devstack.stack import Prometheus

    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"prom/pushgateway:v\d+\.\d+\.\d+", services["pushgateway"]["image"])
    prometheus = services["prometheus"]
    mounts = _binds(prometheus)
    for target, source in mounts.items():
        if source.startswith("./"):
            assert (ROOT / source).is_file(), f"prometheus mounts {source}, which is not in the repository"
    assert _flags(prometheus["command"])["config.file"] == PROMETHEUS_CONFIG
    assert (ROOT / mounts[PROMETHEUS_CONFIG]).name == "prometheus.compose.yml"
    # The same alert rules as the local stack's Prometheus, where the compose config looks for them.
    config = yaml.safe_load((ROOT / mounts[PROMETHEUS_CONFIG]).read_text())
    (rules,) = config["rule_files"]
    assert (ROOT / mounts[rules]).resolve() == Prometheus.alert_rules
    assert _flags(prometheus["command"])["storage.tsdb.path"] in mounts


def test_prometheus_scrapes_the_brokers_agent_and_the_pushgateway(services, compose_prometheus):
    from devstack.stack import KafkaBroker

    kafka = services["kafka"]
    match = re.fullmatch(r"-javaagent:(?P<jar>[^=]+)=(?P<port>\d+):(?P<rules>\S+)",
                         kafka["environment"]["KAFKA_OPTS"])
    assert match, "KAFKA_OPTS does not load the JMX exporter agent as jar=port:rules"
    assert _scrape_target(compose_prometheus, "kafka") == ("kafka", int(match["port"]))
    kafka_mounts = _binds(kafka)
    # The broker reads the rules devstack's broker uses, and the jar jmx-agent-init put in the volume.
    assert (ROOT / kafka_mounts[match["rules"]]).resolve() == KafkaBroker.agent_rules
    jar = Path(match["jar"])
    volume = kafka_mounts[str(jar.parent)]
    init_mounts = _binds(services["jmx-agent-init"])
    assert init_mounts[str(jar.parent)] == volume
    assert volume in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]
    # The broker's own tool JVM in the healthcheck must not load the agent a second time.
    assert services["kafka"]["healthcheck"]["test"][1].startswith("KAFKA_OPTS= ")

    pushgateway = services["pushgateway"]
    port = int(_flags(pushgateway["command"])["web.listen-address"].rpartition(":")[2])
    assert _scrape_target(compose_prometheus, "pushgateway") == ("pushgateway", port)
    (scrape,) = [e for e in compose_prometheus["scrape_configs"] if e["job_name"] == "pushgateway"]
    assert scrape["honor_labels"] is True, "pushed series must keep their own job label"


def test_jmx_agent_init_fetches_the_jar_kafka_loads_from_devstacks_pom(services):
    from devstack.stack import KafkaBroker

    init = services["jmx-agent-init"]
    mounts = _binds(init)
    (pom_target,) = [target for target, source in mounts.items()
                     if source.startswith("./") and (ROOT / source).resolve() == KafkaBroker.agent_pom]
    script = _interpolate(init["command"][0])
    assert f"-f {pom_target} " in script
    jar = Path(re.search(r"-javaagent:([^=]+)=", services["kafka"]["environment"]["KAFKA_OPTS"])[1])
    assert f"-DoutputDirectory={jar.parent}" in script
    # Without its version the jar is named after the artifact.
    artifact = re.search(r"<artifactId>(jmx_prometheus_javaagent)</artifactId>",
                         KafkaBroker.agent_pom.read_text())
    assert artifact and jar.name == f"{artifact[1]}.jar" and "-Dmdep.stripVersion=true" in script
    assert f"test -s {jar}" in script, "the job must fail when it left no jar"


def _flink_properties(service: dict) -> dict[str, str]:
    """The official Flink image's FLINK_PROPERTIES ("key: value" lines) as {key: value}."""
    lines = service["environment"]["FLINK_PROPERTIES"].splitlines()
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines if line.strip())}


def test_flink_runs_the_version_pyflink_pins_with_the_ctr_jobs_options(services, airflow_env, monkeypatch):
    from devstack.flink import JARS_POM, FlinkSettings, cluster_options
    from devstack.stack import StackSettings, _pom_property

    (pinned,) = re.findall(r"^apache-flink==(\S+)$", FLINK_REQUIREMENTS.read_text(), re.MULTILINE)
    assert _pom_property(JARS_POM, "flink.version") == pinned
    images = {services[name]["image"] for name in (*FLINK_SERVICES, "flink-state-init")}
    assert images == {f"flink:{pinned}-scala_2.12-java17"}
    assert [services[name]["command"] for name in FLINK_SERVICES] == ["jobmanager", "taskmanager"]
    jobmanager, taskmanager = (_flink_properties(services[name]) for name in FLINK_SERVICES)
    assert jobmanager == taskmanager
    assert jobmanager.pop("jobmanager.rpc.address") == services["flink-jobmanager"]["hostname"] == "flink-jobmanager"
    # The options devstack.flink gives its local cluster, with the state folder where Airflow has it.
    for variable in ("FLINK_TASK_SLOTS", "FLINK_TASKMANAGER_MEMORY"):
        monkeypatch.delenv(variable, raising=False)
    home = airflow_env["DEVSTACK_HOME"]
    expected = cluster_options(FlinkSettings(stack=StackSettings(home=Path(home))))
    assert jobmanager == {key: str(value) for key, value in expected.items()}
    # Flink, the state folder's init and every Airflow service mount the same volume at that path.
    state = f"{home}/flink"
    for name in (*FLINK_SERVICES, "flink-state-init", *AIRFLOW_SERVICES):
        volumes = dict(reversed(entry.split(":")[:2]) for entry in services[name]["volumes"])
        assert volumes.get(state) == "flink-state", name
    assert "chmod 1777 . checkpoints savepoints restore-points" in " ".join(services["flink-state-init"]["command"])


def test_ctr_stream_reaches_the_flink_cluster_with_the_images_client_and_jars(services, airflow_env, monkeypatch):
    from devstack.flink import FlinkSettings

    for variable, value in airflow_env.items():
        if variable.startswith(("FLINK_", "DEVSTACK_")):
            monkeypatch.setenv(variable, value)
    settings = FlinkSettings()
    # REST on the image's default port (FLINK_PROPERTIES sets no rest.port), published on devstack's 8082.
    assert settings.rest_url == "http://flink-jobmanager:8081"
    assert "rest.port" not in _flink_properties(services["flink-jobmanager"])
    assert (_published(services["flink-jobmanager"])) == [("", 8082, 8081)]
    assert "http://localhost:8081/overview" in " ".join(services["flink-jobmanager"]["healthcheck"]["test"])
    assert f"{settings.rest_url}/overview" in " ".join(services["flink-taskmanager"]["healthcheck"]["test"])
    for name in ("airflow-scheduler", "airflow-worker"):  # where tasks run
        assert services[name]["depends_on"]["flink-taskmanager"]["condition"] == "service_healthy", name
    # The image's PyFlink client and jar cache, made in the flinkclient stage by devstack.flink itself.
    instructions = _dockerfile_instructions()
    env = dict(token.split("=", 1) for keyword, arguments in instructions if keyword == "ENV"
               for token in shlex.split(arguments) if "=" in token)
    assert (env["FLINK_VENV"], env["DEVSTACK_CACHE"]) == ("/opt/flink-venv", "/opt/flink-cache")
    stage = [i for i, (keyword, arguments) in enumerate(instructions) if keyword == "FROM" and "AS flinkclient" in arguments]
    assert stage
    build = " ".join(arguments for keyword, arguments in instructions[stage[0]:] if keyword == "RUN")
    assert "/opt/flink-venv/bin/python -m pip install --no-cache-dir -r /opt/airflow/flink/requirements.txt" in build
    assert "DEVSTACK_CACHE=/opt/flink-cache" in build and "python -m devstack.flink jars" in build
    for path in ("/opt/flink-venv/", "/opt/flink-cache/"):
        assert ("COPY", f"--from=flinkclient {path} {path}") in instructions


def test_monitoring_urls_are_the_local_envs_pointed_at_the_containers(services, airflow_env):
    exported = set(re.findall(r"^export (\w+)=", LOCAL_ENV.read_text(), re.MULTILINE))
    for variable, service in (("PROMETHEUS_URL", "prometheus"), ("PUSHGATEWAY_URL", "pushgateway")):
        assert variable in exported, f"scripts/local-env.sh does not export {variable}"
        url = urlsplit(airflow_env[variable])
        assert url.hostname == service and url.hostname in services, variable
        listen = _flags(services[service]["command"])["web.listen-address"]
        assert url.port == int(listen.rpartition(":")[2]), variable
        assert url.port in {container for _, _, container in _published(services[service])}
        assert f"localhost:{url.port}/-/ready" in " ".join(services[service]["healthcheck"]["test"])


def test_no_secret_has_a_default_and_the_secrets_script_writes_every_one_compose_requires(secrets, tmp_path):
    from cryptography.fernet import Fernet

    text = COMPOSE_FILE.read_text()
    required = set(REQUIRED.findall(text))
    assert required == {"AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_DB_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                        "AIRFLOW_API_SECRET_KEY", "MINIO_ROOT_PASSWORD", "CTR_DB_PASSWORD", "REDIS_PASSWORD"}
    # Nothing that looks like a secret falls back to a written value.
    assert not re.findall(r"\$\{\w*(?:PASSWORD|SECRET|KEY)\w*:-", text)
    assert not re.search(r"://\w+:(?!\$\{)[^@\s]+@", text)  # no password written in a URL
    assert set(secrets) == required and all(len(v) >= 32 for v in secrets.values())
    Fernet(secrets["AIRFLOW_FERNET_KEY"])  # a real key
    # With them, every URL holding one still parses to the same password.
    airflow_env = yaml.safe_load(text)["x-airflow-common"]["environment"]
    database = urlsplit(_interpolate(airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], secrets))
    assert database.password == secrets["AIRFLOW_DB_PASSWORD"]

    # A second run changes nothing; the file is its owner's alone.
    env_file = tmp_path / ".env"
    for _ in range(2):
        run = subprocess.run(["bash", str(SECRETS_SCRIPT)], env={**os.environ, "COMPOSE_ENV_FILE": str(env_file)},
                             check=True, capture_output=True, text=True)
    assert "nothing changed" in run.stdout and "AIRFLOW_ADMIN_PASSWORD" in run.stdout
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert {line.split("=")[0] for line in env_file.read_text().splitlines()} == required


def test_the_celery_profile_runs_two_workers_on_redis_with_the_results_in_the_metadata_db(services, airflow_env,
                                                                                          secrets, airflow_cli):
    from airflow.providers.celery.executors import celery_executor

    celery = {name for name, service in services.items() if "celery" in service.get("profiles", [])}
    assert celery == {"redis", "airflow-worker"}
    # One setting chooses the executor; the default stays the LocalExecutor (checked above).
    assert re.fullmatch(r"\$\{AIRFLOW_COMPOSE_EXECUTOR:-LocalExecutor\}", airflow_env["AIRFLOW__CORE__EXECUTOR"])
    assert "AIRFLOW_COMPOSE_EXECUTOR=CeleryExecutor docker compose -f docker-compose.airflow.yml --profile celery up" \
        in COMPOSE_FILE.read_text()

    worker = services["airflow-worker"]
    assert worker["deploy"]["replicas"] == 2
    args = airflow_cli(shlex.split(worker["command"]))
    assert args.func.__name__ == "worker" and not args.celery_hostname  # celery@<container>, each its own
    assert {k: v for k, v in worker["environment"].items() if k != "DUMB_INIT_SETSID"} == airflow_env
    (probe,) = worker["healthcheck"]["test"][1:]
    app = re.search(r"--app (\S+)", probe)[1]
    assert app == f"{celery_executor.__name__}.app" and hasattr(celery_executor, "app")
    assert 'inspect ping -d "celery@$${HOSTNAME}"' in probe
    for dependency in ("redis", "airflow-apiserver", "kafka", "schema-registry", "minio-init"):
        assert dependency in worker["depends_on"], dependency
    # The scheduler waits for Redis when the profile runs it, and does without it otherwise.
    assert services["airflow-scheduler"]["depends_on"]["redis"] == {"condition": "service_healthy", "required": False}

    broker = urlsplit(_interpolate(airflow_env["AIRFLOW__CELERY__BROKER_URL"], secrets))
    assert (broker.scheme, broker.hostname, broker.port, broker.password) == ("redis", "redis", 6379,
                                                                              secrets["REDIS_PASSWORD"])
    assert airflow_env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+\.\d+-\w+", redis["image"])
    assert _interpolate(redis["environment"]["REDIS_PASSWORD"], secrets) == broker.password
    assert _interpolate(redis["environment"]["REDISCLI_AUTH"], secrets) == broker.password
    (script,) = redis["command"]
    # The password is in redis-server's config on stdin, never on its command line.
    assert script.endswith("| redis-server -") and "requirepass %s" in script and "--requirepass" not in script
    assert "redis-data" in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]
