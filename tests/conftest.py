"""Shared fixtures: the environment Airflow and the clients need, and the local stack.

`make test` sources scripts/local-env.sh; running pytest by hand loads the same file here, so both
see the same connections. Each pytest session gets an Airflow home of its own (a temporary folder),
so tests never touch the demo's metadata DB or another session's.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One Airflow home per pytest session, so two sessions in one checkout never share a metadata DB.
TEST_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-test-"))
atexit.register(shutil.rmtree, TEST_AIRFLOW_HOME, ignore_errors=True)


def _load_local_env() -> None:
    # This runs at import time, before any test module imports Airflow (which reads its config once).
    os.environ["AIRFLOW_HOME"] = str(TEST_AIRFLOW_HOME)
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{TEST_AIRFLOW_HOME}/airflow.db"
    # SQLite takes the LocalExecutor only, whatever AIRFLOW_EXECUTOR the shell has.
    os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    dumped = subprocess.run(
        ["bash", "-c", ". scripts/local-env.sh && env -0"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout
    for entry in dumped.split(b"\0"):
        key, sep, value = entry.decode().partition("=")
        if sep and key not in os.environ:
            os.environ[key] = value


_load_local_env()
# Airflow's dag-processor and workers put the DAG folder (the bundle) on sys.path, so DAG files
# import the building blocks beside them (dags/_*.py); a DagBag built by a test does not.
sys.path.append(str(ROOT / "dags"))


def _started_stack(names: list[str] | None = None):
    """The local stack with these services (default: all) started when not already running."""
    from devstack import Stack, StackError

    stack = Stack()
    try:
        stack.start(names, echo=lambda line: None)
    except StackError as error:
        pytest.fail(f"the local stack could not start: {error}", pytrace=False)
    return stack


@pytest.fixture(scope="session")
def local_stack():
    """The local Kafka, Schema Registry and S3 endpoint, started when not already running."""
    _started_stack()
    return os.environ


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the local stack's CTR store (its PostgreSQL, started alone when not running).

    Taken from the stack rather than the environment: the ctr role's password is written at the
    stack's first start, which may be this one.
    """
    return _started_stack(["postgres"]).environment()["POSTGRES_URL"]


@contextlib.contextmanager
def migrated_ctr_schema(postgres_url: str, schema: str):
    """A fresh, migrated schema of the ctr database, dropped afterwards: its ``url`` and ``schema``.

    The URL puts the schema first on the search path (libpq's ``options``), so every connection
    made from it - the code's, a task's through ``postgres_default`` - works in that schema alone.
    """
    from urllib.parse import quote

    import psycopg
    from psycopg import sql

    from include.ctr.migrate import migrate

    url = f"{postgres_url}?options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            with psycopg.connect(url) as connection:
                migrate(connection)
            yield SimpleNamespace(url=url, schema=schema)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def ctr_schema(postgres_url):
    """``ctr_schema(name)``: :func:`migrated_ctr_schema` on the stack's store, for fixtures of wider scope."""
    return functools.partial(migrated_ctr_schema, postgres_url)


@pytest.fixture
def ctr_store(ctr_schema, unique_name):
    """A migrated CTR store of the test's own (:func:`migrated_ctr_schema`)."""
    with ctr_schema(unique_name("ctr")) as store:
        yield store


@pytest.fixture(scope="session")
def kafka_config(local_stack) -> dict:
    """librdkafka settings for the local broker."""
    return {"bootstrap.servers": local_stack["KAFKA_BOOTSTRAP_SERVERS"]}


@pytest.fixture(scope="session")
def schema_registry_url(local_stack) -> str:
    return local_stack["SCHEMA_REGISTRY_URL"]


@pytest.fixture
def registry_client(schema_registry_url):
    from include.kafka.registry import registry_client as client

    return client(schema_registry_url)


@pytest.fixture(scope="session")
def s3_endpoint_url(local_stack) -> str:
    """URL of the S3-compatible endpoint (moto server) of the local stack."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return local_stack["S3_ENDPOINT_URL"]


@pytest.fixture
def unique_name(request):
    """A name no other test uses: topics, subjects, groups and buckets never collide."""

    def make(prefix: str = "t") -> str:
        test = request.node.name.split("[")[0].replace("test_", "")[:30]
        return f"{prefix}_{test}_{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB in the tests' own AIRFLOW_HOME."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return TEST_AIRFLOW_HOME


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A Flink session cluster of the test module's own: home under pytest's tmp, REST and RPC on free ports."""
    from devstack import probes
    from devstack.flink import FlinkCluster, FlinkSettings, job_jars
    from devstack.stack import StackError, StackSettings

    rest_port, rpc_port = probes.free_ports(2)
    settings = FlinkSettings(stack=StackSettings(home=tmp_path_factory.mktemp("flink")), rest_port=rest_port,
                             rpc_port=rpc_port)
    cluster = FlinkCluster(settings)
    try:
        settings.flink_home  # noqa: B018 - fails first, in one sentence, without .venv-flink
        began = time.monotonic()
        job_jars(settings)  # fetched and built once into the shared cache
        jars_s = time.monotonic() - began
        cluster.start(echo=lambda line: None)
    except StackError as error:
        cluster.stop(echo=lambda line: None)
        pytest.fail(f"the Flink session cluster could not start: {error}", pytrace=False)
    print(f"\nFlink jars ready in {jars_s:.1f} s, cluster in {time.monotonic() - began - jars_s:.1f} s")
    yield cluster
    cluster.stop(echo=lambda line: None)
