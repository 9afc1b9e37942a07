"""The Alembic migrations: the template really is migrated, models and revisions agree."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from server import migrate
from server.models import Base
from tests.server.dbstate import engine_for
from tests.server.seeding import NEWER_REVISION, pretend_newer_schema


def _tables(database_url: str) -> set[str]:
    with engine_for(database_url) as engine, engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_there_is_one_head() -> None:
    assert len(migrate.script_directory().get_heads()) == 1


def test_each_test_database_is_a_copy_of_the_migrated_template(database_url: str) -> None:
    assert migrate.current_revision(database_url) == migrate.head_revision()
    assert {"alembic_version", "hub_keys"} <= _tables(database_url)


def test_the_models_match_the_migrations(database_url: str) -> None:
    with engine_for(database_url) as engine, engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], "models and migrations differ: write a revision"


def test_upgrading_a_database_at_head_changes_nothing(database_url: str) -> None:
    result = migrate.upgrade(database_url)
    assert result.before == result.after == migrate.head_revision()
    assert not result.changed


def test_upgrade_creates_the_schema(empty_database_url: str) -> None:
    result = migrate.upgrade(empty_database_url)
    assert result.before is None
    assert result.after == migrate.head_revision()
    assert result.changed
    assert {"alembic_version", "hub_keys"} <= _tables(empty_database_url)


def test_every_revision_downgrades_and_upgrades_again(database_url: str) -> None:
    with migrate.migration_config(database_url) as config:
        command.downgrade(config, "base")
    assert migrate.current_revision(database_url) is None
    assert "hub_keys" not in _tables(database_url)
    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()


def _upgrade_then_fail(database_url: str) -> None:
    with migrate.migration_config(database_url) as config:
        command.upgrade(config, "head")
        raise RuntimeError("after the DDL")


def test_a_failed_upgrade_leaves_nothing_behind(empty_database_url: str) -> None:
    # One transaction for the whole upgrade, DDL included, on SQLite as well.
    with pytest.raises(RuntimeError, match="after the DDL"):
        _upgrade_then_fail(empty_database_url)
    assert migrate.current_revision(empty_database_url) is None
    assert _tables(empty_database_url) == set()


def test_env_refuses_to_run_without_the_locked_connection() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    with pytest.raises(RuntimeError, match=r"server\.migrate"):
        command.upgrade(config, "head")


def test_a_schema_from_a_newer_release_is_refused(database_url: str) -> None:
    pretend_newer_schema(database_url)
    assert not migrate.is_known(NEWER_REVISION)
    with pytest.raises(migrate.MigrationError, match="does not know: a newer version"):
        migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == NEWER_REVISION


def test_rebuilding_entries_without_rowid_keeps_every_row(empty_database_url: str) -> None:
    # e5a7c3d9f1b2 copies the whole entries table on SQLite: nothing may be
    # lost or changed, whatever the database.
    with migrate.migration_config(empty_database_url) as config:
        command.upgrade(config, "d4f1e8a2c9b3")
    rows = [{"line": f"md5:{i:032x}", "removed": 2 if i % 3 == 0 else None} for i in range(500)]
    with engine_for(empty_database_url) as engine:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO agencies (id, slug, name, created_at) VALUES (1, 'a', 'A', :t)"),
                {"t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO sets (id, agency_id, slug, title, latest_version, created_at) "
                    "VALUES (1, 1, 's', 'S', 2, :t)"
                ),
                {"t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO entries (set_id, line, added_in, removed_in) "
                    "VALUES (1, :line, 1, :removed)"
                ),
                rows,
            )
        migrate.upgrade(empty_database_url)
        with engine.connect() as connection:
            kept = connection.execute(
                text("SELECT line, removed_in FROM entries WHERE set_id = 1 ORDER BY line")
            ).all()
    assert [(r["line"], r["removed"]) for r in rows] == [tuple(row) for row in kept]
