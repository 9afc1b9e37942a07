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
from server.services.pulls import Download, download_queries


def test_marking_a_removed_line_searches_the_primary_key(sqlite_database_url: str) -> None:
    compiled = mark_removed_statement(1, 2).compile(dialect=sqlite.dialect())
    values = dict(compiled.params, old_line="md5:00")
    positional = [values[name] for name in compiled.positiontup or ()]
    path = Path(sqlite_database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as connection:
        plan = connection.execute(f"EXPLAIN QUERY PLAN {compiled}", positional).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "USING PRIMARY KEY (set_id=? AND line=?)" in details, details
    assert "ix_entries_set_removed" not in details, details


def _plan(database_url: str, statement: object) -> str:
    compiled = statement.compile(dialect=sqlite.dialect())  # type: ignore[attr-defined]
    positional = [compiled.params[name] for name in compiled.positiontup or ()]
    path = Path(database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {compiled}", positional).fetchall()
    return " | ".join(row[-1] for row in rows)


def test_each_half_of_a_delta_is_one_ordered_index_range(sqlite_database_url: str) -> None:
    # Applying a 1,000-entry delta must cost the same on a set of any size.
    plans = [
        _plan(sqlite_database_url, query)
        for _, query in download_queries(Download(1, 5, "delta", "0" * 64))
    ]
    assert plans == [
        "SEARCH entries USING COVERING INDEX ix_entries_set_added_line (set_id=? AND added_in=?)",
        "SEARCH entries USING COVERING INDEX ix_entries_set_removed_line "
        "(set_id=? AND removed_in=?)",
    ]


def test_a_content_streams_in_key_order_without_sorting(sqlite_database_url: str) -> None:
    ((_, query),) = download_queries(Download(1, 5, "content", "0" * 64))
    plan = _plan(sqlite_database_url, query)
    assert plan == "SEARCH entries USING PRIMARY KEY (set_id=?)", plan


def test_entries_live_in_their_primary_key_on_sqlite(sqlite_database_url: str) -> None:
    # A rowid table would store every line twice and a publish write both.
    path = Path(sqlite_database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as connection:
        (sql,) = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
        ).fetchone()
    assert sql.rstrip().endswith("WITHOUT ROWID"), sql
