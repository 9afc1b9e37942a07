"""Helpers shared by the hub's test modules."""

from __future__ import annotations

from sqlalchemy import text

from server.engine import make_engine

# A revision id no release of Hashex has: what a newer release would leave.
NEWER_REVISION = "ffffffffffff"


def pretend_newer_schema(database_url: str) -> None:
    """Mark a migrated database as upgraded by a newer release of the hub."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE alembic_version SET version_num = :revision"),
                {"revision": NEWER_REVISION},
            )
    finally:
        engine.dispose()
