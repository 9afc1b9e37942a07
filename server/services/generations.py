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

from sqlalchemy import Engine

_READ = "SELECT listings, tokens FROM generations WHERE id = 1"


@dataclass(frozen=True)
class Generation:
    """The two numbers as one request read them."""

    listings: int
    tokens: int


def read(engine: Engine) -> Generation:
    """The current generations, read on a pooled driver connection of its own.

    Every authenticated request starts here, so this is the one query of a
    no-change poll: a plain cursor on a pooled connection costs about a
    tenth of a Session's transaction around the same SELECT.  One statement
    reads one committed row, so it needs no transaction of its own.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(_READ)
            row = cursor.fetchone()
        finally:
            cursor.close()
        # psycopg opened a transaction for the SELECT: end it before the
        # connection goes back (SQLite's driver opened none).
        connection.commit()
    finally:
        connection.close()
    if row is None:
        raise RuntimeError("the generations row is missing: run hashex-server init")
    return Generation(int(row[0]), int(row[1]))
