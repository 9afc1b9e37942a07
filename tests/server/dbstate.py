"""What a hub database holds, read directly: to prove a refused request changed nothing.

``engine_for`` and ``session_factory`` open a database for a block and
dispose of it after.  ``snapshot`` is every row of some tables (by default
the data tables; ``SET_TABLES`` for what a publish writes), to compare before
and after a request; ``last_audit_id``, ``audit_count`` and ``audit_events``
are what the audit log held before and appended since; ``latest_version`` is
a set's version as the hub stored it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from server.engine import make_engine, make_session_factory
from server.models import AuditEvent

if TYPE_CHECKING:
    from tests.server.seeding import SetChain

# The data tables a refused request must leave alone (the audit log is checked apart).
DATA_TABLES = (
    "agencies",
    "keysets",
    "tokens",
    "sharing_groups",
    "group_members",
    "sets",
    "grants",
)
# What a publish writes to; a refused one must leave every row of these alone.
SET_TABLES = ("sets", "versions", "entries")


@contextmanager
def engine_for(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url``, disposed at the end."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``database_url``; its engine is disposed at the end."""
    with engine_for(database_url) as engine:
        yield make_session_factory(engine)


def snapshot(database_url: str, tables: Sequence[str] = DATA_TABLES) -> dict[str, list[Any]]:
    """Every row of ``tables``, sorted, to compare before and after a request."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),  # noqa: S608
                key=repr,
            )
            for table in tables
        }


def last_audit_id(database_url: str) -> int:
    """The id of the newest audit row (0 when there is none)."""
    with session_factory(database_url) as factory, factory() as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def audit_count(database_url: str) -> int:
    """How many audit rows the database holds."""
    with session_factory(database_url) as factory, factory() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def audit_events(database_url: str, after: int = 0) -> list[AuditEvent]:
    """The audit rows with ids above ``after``, oldest first."""
    with session_factory(database_url) as factory, factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
            ).all()
        )


def latest_version(database_url: str, chain: SetChain) -> int:
    """The set's ``latest_version`` column."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        value = connection.execute(
            text(
                "SELECT s.latest_version FROM sets s JOIN agencies a ON a.id = s.agency_id "
                "WHERE a.slug = :agency AND s.slug = :slug"
            ),
            {"agency": chain.agency.slug, "slug": chain.slug},
        ).scalar_one()
        return int(value)
