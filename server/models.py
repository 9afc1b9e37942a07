"""The hub's tables as SQLAlchemy 2 typed declarative models.

The schema itself is owned by the Alembic revisions in ``migrations/``; these
classes must describe exactly what the revisions create (a test compares
the two), so every change here comes with a new revision.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, Dialect, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names fixed by convention, so revisions can name what they drop or
# alter, and SQLite's table rebuilds in Alembic batch mode keep them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every hub table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, always timezone-aware UTC in Python.

    SQLite stores no zone and hands back naive values; PostgreSQL stores
    ``timestamptz``.  Both read back as aware UTC, and a naive value is refused
    on the way in, since its meaning would depend on the server's zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Check the value is aware and store it as UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Give the stored time back as aware UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


class HubKey(Base):
    """A signing key of the hub's transparency log.

    The private key sits in the database because the hub's gunicorn nodes are
    stateless: every node signs checkpoints with the same key.  The newest row
    is the current key.
    """

    __tablename__ = "hub_keys"
    __table_args__ = (
        CheckConstraint("length(keyid) = 64", name="keyid_length"),
        CheckConstraint("length(public_key) = 32", name="public_key_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    keyid: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
