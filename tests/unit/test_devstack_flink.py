"""devstack.flink without a cluster: what the CTR job is handed for its sinks."""

from __future__ import annotations

import pytest

from devstack.flink import jdbc_environment
from devstack.stack import StackError


def test_the_job_gets_a_jdbc_url_without_the_password_and_the_password_apart():
    env = jdbc_environment("postgresql://ctr:s%40cret@127.0.0.1:5432/ctr")
    assert env == {"CTR_JDBC_URL": "jdbc:postgresql://127.0.0.1:5432/ctr", "CTR_JDBC_USER": "ctr",
                   "CTR_JDBC_PASSWORD": "s@cret"}


def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it():
    with pytest.raises(StackError, match="is not a postgresql://") as error:
        jdbc_environment("mysql://ctr:topsecret@127.0.0.1/ctr")
    assert "topsecret" not in str(error.value)
