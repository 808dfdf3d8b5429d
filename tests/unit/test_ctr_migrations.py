"""The CTR store's migrations without a database: which files they are, their order, what is pending."""

from __future__ import annotations

import pytest

from include.ctr.migrate import MigrationError, discover, pending


def _folder(tmp_path, **files: str):
    for name, sql in files.items():
        (tmp_path / name).write_text(sql)
    return tmp_path


def test_migrations_are_ordered_by_their_number_and_other_files_are_ignored(tmp_path):
    folder = _folder(tmp_path, **{"0010_later.sql": "SELECT 10;", "0002_second.sql": "SELECT 2;",
                                  "0009_ninth.sql": "SELECT 9;", "README.md": "not a migration"})
    assert [(m.version, m.name, m.label) for m in discover(folder)] == [
        (2, "second", "0002_second"), (9, "ninth", "0009_ninth"), (10, "later", "0010_later")]


@pytest.mark.parametrize("name", ["1_short.sql", "0003-dashes.sql", "0003_Upper.sql", "0003.sql"])
def test_a_misnamed_sql_file_is_refused(tmp_path, name):
    with pytest.raises(MigrationError, match=rf"{name} is not named NNNN_what_it_does.sql"):
        discover(_folder(tmp_path, **{name: "SELECT 1;"}))


def test_two_files_with_one_number_are_refused(tmp_path):
    folder = _folder(tmp_path, **{"0004_a.sql": "SELECT 1;", "0004_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match="0004_a.sql and 0004_b.sql .* share version 4"):
        discover(folder)


def test_pending_is_what_was_not_applied_in_order(tmp_path):
    migrations = discover(_folder(tmp_path, **{"0001_a.sql": "SELECT 1;", "0002_b.sql": "SELECT 2;",
                                               "0003_c.sql": "SELECT 3;"}))
    applied = {1: migrations[0].checksum}
    assert [m.version for m in pending(migrations, applied)] == [2, 3]
    assert pending(migrations, {m.version: m.checksum for m in migrations}) == []


def test_an_applied_migration_edited_since_is_refused(tmp_path):
    (first,) = discover(_folder(tmp_path, **{"0001_a.sql": "SELECT 1;"}))
    with pytest.raises(MigrationError, match="0001_a.sql was edited after it was applied"):
        pending([first], {1: "the checksum of another text"})


def test_an_applied_migration_without_its_file_is_refused(tmp_path):
    (first,) = discover(_folder(tmp_path, **{"0001_a.sql": "SELECT 1;"}))
    with pytest.raises(MigrationError, match="migration 0002 applied but there is no such file"):
        pending([first], {1: first.checksum, 2: "gone"})


def test_the_projects_first_migration_creates_the_ctr_tables():
    first = discover()[0]
    assert first.label == "0001_ctr_aggregates"
    for table in ("ctr_hourly", "ctr_minute", "ctr_late", "ctr_batch_hourly"):
        assert f"CREATE TABLE {table} " in first.sql
