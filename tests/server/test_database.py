"""Engines and locks: SQLite's pragmas and BEGIN handling, writer locks, UTC times."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, make_url, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from server.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    advisory_lock_key,
    begin_exclusive,
    begin_exclusive_connection,
    make_engine,
    make_session_factory,
)
from server.models import HubKey


def _row(keyid: str = "a" * 64, public_key: bytes = b"\x01" * 32) -> HubKey:
    return HubKey(
        keyid=keyid, public_key=public_key, private_pem="pem", created_at=datetime.now(UTC)
    )


def _sqlite_path(database_url: str) -> str:
    path = make_url(database_url).database
    assert path is not None
    return path


def test_sqlite_connections_get_their_pragmas(sqlite_database_url: str) -> None:
    engine = make_engine(sqlite_database_url)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_migration_engines_leave_sqlite_foreign_keys_off(sqlite_database_url: str) -> None:
    engine = make_engine(sqlite_database_url, foreign_keys=False)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    finally:
        engine.dispose()


def test_sqlite_transactions_begin_at_the_first_statement(sqlite_database_url: str) -> None:
    # The sqlite3 driver alone would not BEGIN before a SELECT: a later read
    # in the same transaction could then see another writer's commit.
    engine = make_engine(sqlite_database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            raw = connection.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            assert raw.in_transaction
            connection.rollback()
            assert not raw.in_transaction
    finally:
        engine.dispose()


def test_sqlite_ddl_is_transactional(sqlite_database_url: str) -> None:
    engine = make_engine(sqlite_database_url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            connection.rollback()
            names = connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name = 'scratch'"
            ).all()
            assert names == []
    finally:
        engine.dispose()


def _sqlite_writer_is_blocked(database_url: str) -> bool:
    with closing(sqlite3.connect(_sqlite_path(database_url), timeout=0)) as other:
        other.isolation_level = None
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            return True
        other.execute("ROLLBACK")
        return False


def _postgres_lock_is_taken(database_url: str, resource: str) -> bool:
    url = make_url(database_url).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as other:
        row = other.execute(
            "SELECT pg_try_advisory_lock(%s)", (advisory_lock_key(resource),)
        ).fetchone()
        assert row is not None
        if row[0]:
            other.execute("SELECT pg_advisory_unlock(%s)", (advisory_lock_key(resource),))
        return not row[0]


def _is_locked(database_url: str, resource: str) -> bool:
    if database_url.startswith("sqlite"):
        return _sqlite_writer_is_blocked(database_url)
    return _postgres_lock_is_taken(database_url, resource)


def test_begin_exclusive_holds_the_writer_lock_until_commit(
    database_url: str, engine: Engine
) -> None:
    with make_session_factory(engine)() as session:
        session.execute(select(HubKey)).all()
        assert not _is_locked(database_url, "audit"), "a plain transaction takes no lock"
        session.rollback()
        begin_exclusive(session, "audit")
        assert _is_locked(database_url, "audit")
        session.commit()
        assert not _is_locked(database_url, "audit")


def test_begin_exclusive_connection_holds_the_lock(database_url: str, engine: Engine) -> None:
    with engine.connect() as connection:
        with begin_exclusive_connection(connection, "log"):
            assert _is_locked(database_url, "log")
        assert not _is_locked(database_url, "log")


def test_begin_exclusive_must_start_the_transaction(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(RuntimeError, match="must start"):
            begin_exclusive(session, "audit")


def test_advisory_lock_keys_are_stable_signed_64_bit() -> None:
    key = advisory_lock_key("audit")
    assert key == advisory_lock_key("audit")
    assert key != advisory_lock_key("log")
    assert -(2**63) <= key < 2**63


def test_times_come_back_aware_utc(engine: Engine) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    sessions = make_session_factory(engine)
    with sessions() as session:
        row = _row()
        row.created_at = moment
        session.add(row)
        session.commit()
    with sessions() as session:
        stored = session.scalars(select(HubKey)).one().created_at
    assert stored == moment
    assert stored.tzinfo is UTC


def test_naive_times_are_refused(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        row = _row()
        row.created_at = datetime(2026, 1, 2, 3, 4, 5)
        session.add(row)
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


@pytest.mark.parametrize(
    "bad",
    [{"public_key": b"\x01" * 31}, {"keyid": "a" * 63}],
    ids=["short-public-key", "short-keyid"],
)
def test_hub_key_checks_hold_in_the_database(engine: Engine, bad: dict[str, Any]) -> None:
    with make_session_factory(engine)() as session:
        session.add(_row(**bad))
        with pytest.raises(IntegrityError):
            session.commit()
