"""Every DAG imports cleanly, carries owner/tags/retries, and does no I/O when parsed."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


class _NoIOAtImport(RuntimeError):
    pass


@pytest.fixture(scope="module")
def dagbag():
    """Parse dags/ with network connections and subprocesses forbidden."""
    from airflow.dag_processing.dagbag import DagBag

    def forbidden(*args, **kwargs):
        raise _NoIOAtImport("a DAG file opened a connection or a process at import time")

    patches = [(socket.socket, "connect"), (socket.socket, "connect_ex"), (subprocess, "Popen")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in patches]
    try:
        for owner, name in patches:
            setattr(owner, name, forbidden)
        return DagBag(dag_folder=str(DAGS))
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_a_dag(dagbag):
    files = {p.resolve() for p in DAGS.glob("*.py") if not p.name.startswith("_")}
    with_dags = {Path(d.fileloc).resolve() for d in dagbag.dags.values()}
    assert files == with_dags


def test_every_dag_says_what_it_does_in_the_ui(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.description and len(dag.description) > 30, f"{dag_id} has no description for the DAG list"
        for name, param in dag.params.items():
            assert param.description, f"{dag_id} param {name} has no description for the trigger form"


@pytest.mark.parametrize("attribute", ["tags", "owner", "retries"])
def test_every_dag_has(dagbag, attribute):
    assert dagbag.dags, "no DAGs were found"
    for dag_id, dag in dagbag.dags.items():
        if attribute == "tags":
            assert dag.tags, f"{dag_id} has no tags"
        elif attribute == "owner":
            owners = {t.owner for t in dag.tasks}
            assert owners and "airflow" not in owners, f"{dag_id} keeps the default owner"
        else:
            for t in dag.tasks:
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
