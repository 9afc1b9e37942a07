"""Run the Alembic migrations in ``migrations/`` from code.

No ``alembic.ini`` is read: the configuration is built here, pointing at the
installed ``migrations`` package, so the installed hub upgrades its database
from any working directory.  Migrations run on one connection, in one
transaction, under the "migrations" writer lock: an upgrade is all or
nothing, and two nodes upgrading at once take turns (the second finds the
schema already at head).

To write a new revision against a database at head::

    with migration_config(url) as config:
        alembic.command.revision(config, "add agencies", autogenerate=True)

then review and edit the generated file in ``migrations/versions/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection

import migrations
from server.engine import begin_exclusive_connection, make_engine

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

_LOCK = "migrations"


class MigrationError(RuntimeError):
    """The schema cannot be brought to this code's revision; nothing was committed."""


@dataclass(frozen=True)
class UpgradeResult:
    """The schema revision before and after an upgrade (None: an empty database)."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        """Whether the upgrade applied any revision."""
        return self.before != self.after


def script_directory() -> ScriptDirectory:
    """The Alembic revisions shipped with this version of the hub."""
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return script_directory().get_current_head()


def is_known(revision: str) -> bool:
    """Whether ``revision`` is one of this code's revisions (not a newer release's)."""
    try:
        script_directory().get_revision(revision)
    except CommandError:
        return False
    return True


@contextmanager
def migration_config(database_url: str) -> Iterator[Config]:
    """An Alembic config whose ``env.py`` runs on a locked connection.

    The connection is in ``config.attributes["connection"]``; its transaction
    commits when the block ends without error, and rolls back otherwise.
    """
    engine = make_engine(database_url, foreign_keys=False)
    try:
        with engine.connect() as connection, begin_exclusive_connection(connection, _LOCK):
            config = Config()
            # ConfigParser interpolates "%", which a path may contain.
            config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
            config.attributes["connection"] = connection
            yield config
            _check_foreign_keys(connection)
    finally:
        engine.dispose()


def upgrade(database_url: str) -> UpgradeResult:
    """Create or upgrade the database's schema to the newest revision."""
    with migration_config(database_url) as config:
        connection: Connection = config.attributes["connection"]
        before = _revision_of(connection)
        if before is not None and not is_known(before):
            raise MigrationError(
                f"the database is at revision {before}, which this version of Hashex "
                "does not know: a newer version has upgraded it"
            )
        command.upgrade(config, "head")
        after = _revision_of(connection)
    return UpgradeResult(before, after)


def current_revision(database_url: str) -> str | None:
    """The database's schema revision, or None if it has never been migrated."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return _revision_of(connection)
    finally:
        engine.dispose()


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _check_foreign_keys(connection: Connection) -> None:
    # Migrations run with SQLite's foreign keys off (table rebuilds would
    # cascade otherwise), so check once at the end what they would have checked.
    if connection.dialect.name != "sqlite":
        return
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        tables = sorted({str(row[0]) for row in violations})
        raise MigrationError(
            f"migration left {len(violations)} foreign key violation(s) in {', '.join(tables)}"
        )
