"""Shared fixtures: the environment Airflow and the clients need, and the local stack.

`make test` sources scripts/local-env.sh; running pytest by hand loads the same file here, so both
see the same connections. Each pytest session gets an Airflow home of its own (a temporary folder),
so tests never touch the demo's metadata DB or another session's.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

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
