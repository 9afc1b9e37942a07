"""The hub's tables as SQLAlchemy 2 typed declarative models.

The schema itself is owned by the Alembic revisions in ``migrations/``; these
classes must describe exactly what the revisions create (a test compares
the two), so every change here comes with a new revision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
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


class Agency(Base):
    """A member agency: it owns sets, holds tokens and signs with its keysets."""

    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgencyKeyset(Base):
    """One signed keyset of an agency, stored as the exact bytes it signed."""

    __tablename__ = "keysets"
    __table_args__ = (
        UniqueConstraint("agency_id", "version", name="uq_keysets_agency_version"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    signatures: Mapped[str] = mapped_column(Text)

    @property
    def signature_list(self) -> list[dict[str, str]]:
        """The signatures as the list of ``{"keyid", "sig"}`` the JSON text holds."""
        signatures: list[dict[str, str]] = json.loads(self.signatures)
        return signatures

    sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    """A bearer token: only its SHA-256 is kept, and lookups go by that hash."""

    __tablename__ = "tokens"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin', 'agency-admin', 'publisher', 'reader')", name="role_known"
        ),
        CheckConstraint("length(secret_sha256) = 64", name="secret_sha256_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SharingGroup(Base):
    """A named group of agencies that a set can be granted to as ``group:<slug>``."""

    __tablename__ = "sharing_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class GroupMember(Base):
    """An agency's membership of a sharing group."""

    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("sharing_groups.id"), primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HashSet(Base):
    """A versioned hash set owned by one agency; its name is never reused."""

    __tablename__ = "sets"
    __table_args__ = (
        UniqueConstraint("agency_id", "slug", name="uq_sets_agency_slug"),
        CheckConstraint("latest_version >= 0", name="latest_version_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    slug: Mapped[str] = mapped_column(String(63))
    title: Mapped[str] = mapped_column(String(200))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Grant(Base):
    """One reader of a set: an agency, or every member of a sharing group."""

    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint("(agency_id IS NULL) <> (group_id IS NULL)", name="one_reader_kind"),
        UniqueConstraint("set_id", "agency_id", name="uq_grants_set_agency"),
        UniqueConstraint("set_id", "group_id", name="uq_grants_set_group"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id"), index=True)
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("agencies.id"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("sharing_groups.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """One row of the append-only, hash-chained audit log.

    ``id`` is assigned as the previous row's plus one (never by a sequence,
    whose gaps would hide deletions) and ``hash`` covers every other column
    and the previous row's hash.  Agencies are named by slug, not by foreign
    key: the log outlives what it describes.
    """

    __tablename__ = "audit_events"
    __table_args__ = (CheckConstraint("outcome IN ('ok', 'refused')", name="outcome_known"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    actor_agency: Mapped[str | None] = mapped_column(String(63), index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    subject_agency: Mapped[str | None] = mapped_column(String(63), index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)

    @property
    def detail_object(self) -> dict[str, Any]:
        """The detail as the object its JSON text holds."""
        detail: dict[str, Any] = json.loads(self.detail)
        return detail

    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SetVersion(Base):
    """One published version of a set: the signed manifest and what it commits to.

    The unique (set, version) constraint is the last word on races: of two
    publishes of the same version, exactly one row can exist.
    """

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("set_id", "version", name="uq_versions_set_version"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id"))
    version: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[str] = mapped_column(Text)
    signatures: Mapped[str] = mapped_column(Text)

    @property
    def signature_list(self) -> list[dict[str, str]]:
        """The signatures as the list of ``{"keyid", "sig"}`` the JSON text holds."""
        signatures: list[dict[str, str]] = json.loads(self.signatures)
        return signatures

    manifest_sha256: Mapped[str] = mapped_column(String(64))
    delta_sha256: Mapped[str] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))
    adds: Mapped[int] = mapped_column(Integer)
    removes: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
    keyset_version: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Entry(Base):
    """One canonical entry line of a set, alive from ``added_in`` until ``removed_in``.

    The content at version n is every line with ``added_in <= n`` and
    ``removed_in`` null or above n; the delta of n is the lines added in n and
    those removed in n.  Both are range scans of the (set, line) primary key
    in bytewise order: the column collates as "C" on PostgreSQL, and SQLite
    compares text bytewise already.
    """

    __tablename__ = "entries"
    __table_args__ = (
        # Covering indexes: the delta of version n is one ordered range of
        # each, whatever the size of the set.
        Index("ix_entries_set_added_line", "set_id", "added_in", "line"),
        # Partial: only removed lines; the live ones are found by the key.
        Index(
            "ix_entries_set_removed_line",
            "set_id",
            "removed_in",
            "line",
            sqlite_where=text("removed_in IS NOT NULL"),
            postgresql_where=text("removed_in IS NOT NULL"),
        ),
        CheckConstraint("removed_in IS NULL OR removed_in > added_in", name="lifetime_order"),
        # SQLite: the rows live in the key's B-tree, not beside it.
        {"sqlite_with_rowid": False},
    )

    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id"), primary_key=True)
    line: Mapped[str] = mapped_column(
        String(200).with_variant(String(200, collation="C"), "postgresql"), primary_key=True
    )
    added_in: Mapped[int] = mapped_column(Integer, primary_key=True)
    removed_in: Mapped[int | None] = mapped_column(Integer)


class Generations(Base):
    """Two numbers that move whenever what listings show, or what tokens prove, may change.

    Database triggers move them in the changing transaction itself (revision
    ``f3b8d2a6c4e1``): ``listings`` on sets, grants, group memberships and
    keysets; ``tokens`` on tokens (not their last-used time) and agencies.
    What a node keeps in memory is known current by reading this one row.
    """

    __tablename__ = "generations"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    listings: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
