"""The statement that marks removed entries must find each line by the primary key.

With a plain ``removed_in IS NULL`` SQLite's planner preferred the
(set_id, removed_in) index and scanned every live entry of the set for each
removed line: 10,000 removes from a 12,000-entry set took half a minute.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.dialects import sqlite

from server.services.publishing import mark_removed_statement


def test_marking_a_removed_line_searches_the_primary_key(sqlite_database_url: str) -> None:
    compiled = mark_removed_statement(1, 2).compile(dialect=sqlite.dialect())
    values = dict(compiled.params, old_line="md5:00")
    positional = [values[name] for name in compiled.positiontup or ()]
    path = Path(sqlite_database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as connection:
        plan = connection.execute(f"EXPLAIN QUERY PLAN {compiled}", positional).fetchall()
    details = " ".join(row[-1] for row in plan)
    # SQLite names the composite primary key's index sqlite_autoindex_entries_1.
    assert "sqlite_autoindex_entries_1 (set_id=? AND line=?)" in details, details
    assert "ix_entries_set_removed" not in details, details
