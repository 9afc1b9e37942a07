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

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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


K = TypeVar("K")
V = TypeVar("V")


class GenerationCache(Generic[K, V]):
    """Values by key, each tagged with the generation it was read at; safe between threads.

    A value is handed out only for the generation it was read at, so it is
    never used once the database has moved the number.  Past ``max_entries``
    the cache starts afresh rather than grow with keys no longer asked for.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: dict[K, tuple[int, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, generation: int) -> V | None:
        """The value of ``key`` read at ``generation``, if remembered."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == generation else None

    def put(self, key: K, generation: int, value: V) -> V:
        """Remember ``value`` as read at ``generation``; return it."""
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            current = self._entries.get(key)
            # A slower thread that read an older generation must not replace a newer value.
            if current is None or current[0] <= generation:
                self._entries[key] = (generation, value)
        return value
