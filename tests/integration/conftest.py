"""Fixtures the integration tests of more than one module share."""

from __future__ import annotations

import time

import pytest

from devstack import probes
from devstack.flink import FlinkCluster, FlinkSettings, job_jars
from devstack.stack import StackError, StackSettings


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A session cluster of the module's own: home under pytest's tmp, REST and RPC on free ports."""
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
