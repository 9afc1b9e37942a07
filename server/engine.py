"""Engines, sessions and write locks, with no Flask in sight.

The services take a :class:`~sqlalchemy.orm.Session` made here; the Flask
binding in :mod:`server.flask_db` and the admin CLI both build on this module.

SQLite needs three things from every connection, set when it is opened:
enforced foreign keys, write-ahead logging (readers never block the writer)
and a generous busy timeout (a writer waits for the lock instead of failing).
Python's ``sqlite3`` driver (before the ``autocommit`` attribute of 3.12)
also starts transactions on its own, late and only before DML; we switch
that off and emit ``BEGIN`` ourselves, following SQLAlchemy's recipe in
"Transactions with SQLite and the sqlite3 driver".  That makes DDL
transactional and lets :func:`begin_exclusive` open a transaction with
``BEGIN IMMEDIATE``, which takes the write lock up front: two racing writers
then queue on the busy timeout instead of one of them failing at its first
write with "database is locked".
"""

from __future__ import annotations

import hashlib
import sqlite3

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import Connection, RootTransaction, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Connection execution option read by our BEGIN hook: start with BEGIN IMMEDIATE.
_BEGIN_IMMEDIATE = "hashex_begin_immediate"


def make_engine(database_url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine for a normalised Hashex database URL (see :mod:`server.config`).

    ``foreign_keys=False`` is for migrations only: SQLite rebuilds a table to
    alter it, and enforced foreign keys would cascade that into other tables.
    """
    if make_url(database_url).get_backend_name() != "sqlite":
        # A load balancer or a database failover closes idle connections; test
        # each one as it leaves the pool rather than fail a request on it.
        return create_engine(database_url, pool_pre_ping=True)
    engine = create_engine(database_url)
    pragmas = (
        f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}",
        "PRAGMA journal_mode = WAL",
        f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    )

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # The driver must not BEGIN on its own; _begin_sqlite does it.  This
        # also runs the pragmas outside any transaction, where SQLite
        # ignores foreign_keys and refuses journal_mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_hot_engine(engine: Engine) -> Engine:
    """The engine for the one read every request makes first (the generations row).

    On PostgreSQL its connections run in autocommit and are not pinged as
    they leave the pool: one round trip per read instead of four.  The
    reader retries once on a connection found dead.  SQLite's driver opens
    no transaction for a lone SELECT, so there ``engine`` itself serves.
    """
    if engine.dialect.name == "sqlite":
        return engine
    return create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``; objects stay readable after commit (no reload)."""
    return sessionmaker(engine, expire_on_commit=False)


def begin_exclusive(session: Session, resource: str) -> None:
    """Start the session's transaction as the only writer of ``resource``.

    Call it before the session runs any statement.  On SQLite the transaction
    starts with ``BEGIN IMMEDIATE``: the database's one write lock, taken now.
    On PostgreSQL it takes a transaction-scoped advisory lock named by
    ``resource``, so writers of other resources go on in parallel.  Either
    way the lock is held until commit or rollback, and a second writer waits
    for it rather than fails.
    """
    if session.in_transaction():
        raise RuntimeError("begin_exclusive() must start the session's transaction")
    _lock(session.connection(execution_options={_BEGIN_IMMEDIATE: True}), resource)


def begin_exclusive_connection(connection: Connection, resource: str) -> RootTransaction:
    """Like :func:`begin_exclusive`, for a Core connection; returns its transaction.

    The connection keeps starting its transactions with ``BEGIN IMMEDIATE``.
    """
    if connection.in_transaction():
        raise RuntimeError("begin_exclusive_connection() must start the transaction")
    connection.execution_options(**{_BEGIN_IMMEDIATE: True})
    transaction = connection.begin()
    _lock(connection, resource)
    return transaction


def lock_resource(session: Session, resource: str) -> None:
    """Inside a transaction begun by :func:`begin_exclusive`, also lock ``resource``.

    On PostgreSQL this takes one more advisory lock, held until commit.  On
    SQLite the transaction already holds the database's only write lock; a
    transaction begun any other way could not promise that, so it is refused.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not connection.get_execution_options().get(
        _BEGIN_IMMEDIATE, False
    ):
        raise RuntimeError(f"lock_resource({resource!r}) needs a begin_exclusive() transaction")
    _lock(connection, resource)


def _lock(connection: Connection, resource: str) -> None:
    # SQLite needs nothing more: BEGIN IMMEDIATE already holds the write lock.
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(advisory_lock_key(resource))))


def advisory_lock_key(resource: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock key that stands for ``resource``."""
    digest = hashlib.sha256(b"hashex-lock:" + resource.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
