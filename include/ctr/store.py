"""Connections to the CTR store (PostgreSQL): opened in one place, with one sentence when they cannot be.

Every reader and writer of the CTR tables (the migrations, the batch computation, the health
check) opens its connection here from a libpq URL: ``$POSTGRES_URL`` on the command line, the
``postgres_default`` Airflow connection in a task. A URL may carry libpq options, e.g.
``?options=-csearch_path%3Dother`` to work in another schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.errors import PermanentError, RetriableError

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 10


class StoreUnreachable(RetriableError):
    """The CTR store's PostgreSQL did not accept a connection."""


class StoreNotMigrated(PermanentError):
    """The CTR store answers but lacks the tables of include/ctr/migrations."""


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A connection to the store at ``url``; :class:`StoreUnreachable` naming where (never the password)."""
    import psycopg

    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)
    except psycopg.OperationalError as error:
        raise StoreUnreachable(f"PostgreSQL at {where(url)} did not accept a connection: "
                               f"{str(error).strip().splitlines()[0]}") from None


def where(url: str) -> str:
    """host:port/database of a URL, for messages: the URL itself holds the password."""
    from psycopg.conninfo import conninfo_to_dict

    conninfo = conninfo_to_dict(url)
    return f"{conninfo.get('host', 'localhost')}:{conninfo.get('port', 5432)}/{conninfo.get('dbname', '')}"


def missing_tables(connection: psycopg.Connection, tables: tuple[str, ...]) -> list[str]:
    """Those of ``tables`` the connection's search path does not find."""
    found = connection.execute("SELECT name, to_regclass(name) IS NOT NULL FROM unnest(%s::text[]) AS name",
                               (list(tables),)).fetchall()
    return [name for name, present in found if not present]


def require_tables(connection: psycopg.Connection, tables: tuple[str, ...], url: str) -> None:
    """:class:`StoreNotMigrated` naming the first missing table and the command that creates it."""
    missing = missing_tables(connection, tables)
    if missing:
        raise StoreNotMigrated(f"the CTR store at {where(url)} has no table {missing[0]}"
                               f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
                               "apply its migrations with `python -m include.ctr.migrate`")
