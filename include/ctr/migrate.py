"""The CTR store's schema, as numbered plain-SQL migrations applied once each, in order.

    python -m include.ctr.migrate [--url postgresql://...]    # default: $POSTGRES_URL

Migrations are the files ``NNNN_what_it_does.sql`` in ``include/ctr/migrations/``. Every pending
one is applied in one transaction (all of them or none) and recorded, with its checksum, in the
table ``schema_migrations``; a migration that was applied and then edited stops the run, as its
change would never reach a database that already has it. Two runs at once take turns (an advisory
lock), so each migration is applied once.

The result is printed as one JSON line on stdout. Exit 1 for a permanent failure, 75 for a
retriable one (the database does not answer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from include.ctr.store import StoreUnreachable, connect
from include.errors import PermanentError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")
# Any constant of our own: runs on the same database wait for each other on it.
ADVISORY_LOCK_KEY = 0x637472  # "ctr"

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(PermanentError):
    """The migration files or the recorded ones are not what the runner can apply."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the number it starts with), name and text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass
class MigrationRun:
    """What a run did: the migrations it applied and those it found applied already."""

    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"applied": self.applied, "already_applied": self.already_applied,
                "seconds": round(self.seconds, 3)}


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The folder's migrations in version order; a .sql file misnamed or a version used twice is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path} is not named NNNN_what_it_does.sql (four digits, then "
                "lower-case words joined by _); rename it"
            )
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(
                f"migrations {migrations[version].label}.sql and {path.name} in {folder} share "
                f"version {version}; give one the next free number"
            )
        migrations[version] = Migration(version, match["name"], path.read_text())
    return [migrations[v] for v in sorted(migrations)]


def pending(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """The migrations not yet applied, given {version: checksum} of those that were.

    An applied migration whose file changed since, or one recorded that has no file any more,
    is an error: the database and the repository would disagree from then on.
    """
    known = {m.version: m for m in migrations}
    for version, checksum in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d} applied but there is no such file "
                "among the migrations; restore it (migrations are never deleted)"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.label}.sql was edited after it was applied; put the change "
                "in a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


def migrate(connection: psycopg.Connection, migrations: list[Migration] | None = None) -> MigrationRun:
    """Apply the pending migrations on connection, in order, in one transaction."""
    began = time.monotonic()
    migrations = discover() if migrations is None else migrations
    run = MigrationRun()
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        connection.execute(SCHEMA_MIGRATIONS)
        applied = dict(connection.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        todo = pending(migrations, applied)
        run.already_applied = [m.label for m in migrations if m.version in applied]
        for migration in todo:
            log.info("applying migration %s", migration.label)
            # A file holds several statements; without parameters they go as one simple query.
            connection.execute(migration.sql)
            connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            run.applied.append(migration.label)
    run.seconds = time.monotonic() - began
    log.info("migrations: %d applied, %d already applied, in %.2f s",
             len(run.applied), len(run.already_applied), run.seconds)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.ctr.migrate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POSTGRES_URL"),
                        help="the database's postgresql:// URL (default: $POSTGRES_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.url:
        parser.exit(1, "error: no database to migrate: set POSTGRES_URL (. scripts/local-env.sh) or pass --url\n")
    # Only the command line opens a connection; the runner works on the one it is given.
    try:
        with connect(args.url) as connection:
            result = migrate(connection)
    except (MigrationError, StoreUnreachable) as error:
        parser.exit(75 if error.retriable else 1, f"error: {error}\n")
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
