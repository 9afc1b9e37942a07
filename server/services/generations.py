"""The generations row: what a node may keep in memory, and for how long.

Triggers move ``listings`` whenever any listing may have changed and
``tokens`` whenever any token's verdict may have (see
:class:`~server.models.Generations`).  A request reads both numbers first,
in one tiny query, and uses a remembered token check or listing only if it
was made at the same number.  Read them *before* what they stand for: what
is read after is then never older than the numbers, only possibly newer,
which a later request corrects when it sees them move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

_READ = "SELECT listings, tokens FROM generations WHERE id = 1"


@dataclass(frozen=True)
class Generation:
    """The two numbers as one request read them."""

    listings: int
    tokens: int


def read(engine: Engine) -> Generation:
    """The current generations, read on a pooled driver connection of ``engine``.

    Every authenticated request starts here, so this is the one query of a
    no-change poll, and its cost is the poll's: a plain cursor on a pooled
    connection, in autocommit (:func:`server.engine.make_hot_engine`), is one
    round trip where a Session's transaction is four (a liveness ping, BEGIN,
    the SELECT, COMMIT).  Without the ping, a connection the database or a
    proxy closed while it idled in the pool fails here: it is dropped and
    the read is tried once more on a fresh one.
    """
    try:
        row = _read_once(engine)
    except engine.dialect.loaded_dbapi.OperationalError:
        row = _read_once(engine)
    if row is None:
        raise RuntimeError("the generations row is missing: run hashex-server init")
    return Generation(int(row[0]), int(row[1]))


def _read_once(engine: Engine) -> Any:
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(_READ)
            return cursor.fetchone()
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.OperationalError:
        connection.invalidate()
        raise
    finally:
        connection.close()
