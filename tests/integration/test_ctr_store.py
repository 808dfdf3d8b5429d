"""The CTR store on the local stack's real PostgreSQL: migrations, the tables a Flink JDBC sink
upserts, and the server devstack runs.

Each test works in a schema of its own (dropped afterwards), so tests never see each other's rows
or migrations, nor those of the ctr database's own schema.
"""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack import Stack
from include.ctr.migrate import discover, migrate

pytestmark = pytest.mark.integration

TABLES = {"schema_migrations", "ctr_hourly", "ctr_minute", "ctr_late", "ctr_batch_hourly",
          "ctr_hourly_rates", "ctr_minute_rates", "ctr_batch_parts", "ctr_batch_runs"}
HOUR = datetime.datetime(2014, 10, 21, 0, 0)


@pytest.fixture
def schema(postgres_url, unique_name):
    """A fresh schema, first on the search path of every connection made with connect()."""
    name = unique_name("ctr")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        yield name
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def connect(postgres_url, schema):
    opened = []

    def make() -> psycopg.Connection:
        connection = psycopg.connect(postgres_url, options=f"-c search_path={schema}")
        opened.append(connection)
        return connection

    yield make
    for connection in opened:
        connection.close()


def test_migrations_apply_once_and_create_the_tables(connect, schema):
    labels = [m.label for m in discover()]
    with connect() as connection:
        first = migrate(connection)
        second = migrate(connection)
        tables = {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
        recorded = connection.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert (first.applied, first.already_applied) == (labels, [])
    assert (second.applied, second.already_applied) == ([], labels)
    assert tables == TABLES
    assert [version for (version,) in recorded] == [m.version for m in discover()]


def test_two_runs_at_once_apply_each_migration_once(connect):
    runs, errors = [], []
    connections = [connect(), connect()]

    def run(connection):
        try:
            runs.append(migrate(connection))
        except Exception as error:  # the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(len(r.applied) for r in runs) == [0, len(discover())]


@pytest.mark.parametrize("table, window", [("ctr_hourly", "hour"), ("ctr_minute", "minute"),
                                           ("ctr_batch_hourly", "hour")])
def test_an_upsert_twice_leaves_one_row_with_the_latest_counts(connect, table, window):
    # What a Flink JDBC sink sends for a table with a primary key.
    upsert = sql.SQL(
        "INSERT INTO {table} ({window}, dimension, value, impressions, clicks) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT ({window}, dimension, value) DO UPDATE "
        "SET impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks"
    ).format(table=sql.Identifier(table), window=sql.Identifier(window))
    with connect() as connection:
        migrate(connection)
        connection.execute(upsert, (HOUR, "site_id", "1fbe01fe", 100, 17))
        connection.execute(upsert, (HOUR, "site_id", "1fbe01fe", 180, 30))
        rows = connection.execute(sql.SQL("SELECT {}, dimension, value, impressions, clicks FROM {}").format(
            sql.Identifier(window), sql.Identifier(table))).fetchall()
    assert rows == [(HOUR, "site_id", "1fbe01fe", 180, 30)]


def test_late_records_are_counted_per_window(connect):
    upsert = ("INSERT INTO ctr_late (window_kind, window_start, records) VALUES (%s, %s, %s) "
              "ON CONFLICT (window_kind, window_start) DO UPDATE SET records = EXCLUDED.records")
    with connect() as connection:
        migrate(connection)
        connection.execute(upsert, ("minute", HOUR, 3))
        connection.execute(upsert, ("minute", HOUR, 5))
        connection.execute(upsert, ("hour", HOUR, 5))
        rows = connection.execute("SELECT window_kind, records FROM ctr_late ORDER BY window_kind").fetchall()
    assert rows == [("hour", 5), ("minute", 5)]


@pytest.mark.parametrize("row, constraint", [
    (("all", "1fbe01fe", 10, 1), "ctr_all_has_no_value"),
    (("device_ip", "x", 10, 1), "ctr_dimension"),
    (("all", "", 10, 11), "ctr_counts"),
])
def test_rows_that_no_aggregate_can_hold_are_refused(connect, row, constraint):
    with connect() as connection:
        migrate(connection)
        with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
            connection.execute("INSERT INTO ctr_hourly VALUES (%s, %s, %s, %s, %s)", (HOUR, *row))


def test_the_server_listens_on_loopback_only_as_an_unprivileged_user(postgres_url):
    service = Stack().services["postgres"]
    with psycopg.connect(postgres_url) as connection:
        (listening,) = connection.execute("SHOW listen_addresses").fetchone()
    assert listening == "127.0.0.1"
    assert (service.socket_dir / f".s.PGSQL.{service.settings.postgres_port}").is_socket()
    owner = Path(f"/proc/{service.pid()}").stat().st_uid
    # PostgreSQL refuses root: a root devstack runs it as the postgres user.
    assert owner == (service.run_as()["user"] if os.geteuid() == 0 else os.geteuid())
    assert service.password_file.stat().st_mode & 0o777 == 0o600
