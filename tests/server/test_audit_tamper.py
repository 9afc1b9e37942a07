"""``hashex-server audit verify`` against an audit log edited behind the hub's back.

Each test builds a chain of six events through the admin CLI, changes the
``audit_events`` table directly in the database (SQLite and PostgreSQL), and
checks that ``audit verify`` exits 3 naming exactly the first wrong row:

    1 agency.create acme    2 agency.create beta    3 token.create (acme)
    4 group.create europe   5 group.add beta        6 token.revoke 1
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from server.cli import main
from server.cli.audit import EXIT_CHAIN_BROKEN
from server.engine import make_engine, make_session_factory
from server.models import AuditEvent
from server.services.audit import row_hash
from tests.server.test_cli_admin import create_agency, create_token

ROWS = 6
# Every column but the id, in the order the table declares them.
COLUMNS = [c.name for c in AuditEvent.__table__.columns if c.name != "id"]

EDITED = "its contents do not match its hash (edited)"
UNCHAINED = "does not chain to the row before it"


@pytest.fixture
def engine(runner: CliRunner, database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database whose audit chain holds the six events above."""
    create_agency(runner, tmp_path, "acme")
    create_agency(runner, tmp_path, "beta")
    create_token(runner, "acme")
    for command in (["group", "create", "europe"], ["group", "add", "europe", "beta"]):
        assert runner.invoke(main, command).exit_code == 0
    assert runner.invoke(main, ["token", "revoke", "1"]).exit_code == 0
    intact = runner.invoke(main, ["audit", "verify"])
    assert intact.stdout.startswith(f"{ROWS}:")
    assert intact.stderr == f"audit chain intact: {ROWS} rows\n"
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def execute(engine: Engine, statement: str, **params: Any) -> None:
    """Run one raw SQL statement in a transaction of its own."""
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def read(engine: Engine, row_id: int) -> AuditEvent:
    """Row ``row_id`` of the audit log, as the hub reads it."""
    with make_session_factory(engine)() as session:
        event = session.get(AuditEvent, row_id)
        assert event is not None
        return event


def raw_row(engine: Engine, row_id: int) -> dict[str, Any]:
    """Row ``row_id``'s columns other than the id, exactly as the database holds them."""
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE id = :id"),  # noqa: S608
            {"id": row_id},
        ).one()
    return dict(row._mapping)


def overwrite(engine: Engine, row_id: int, values: Mapping[str, Any]) -> None:
    """Set row ``row_id``'s columns to ``values`` with one raw UPDATE."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    execute(
        engine,
        f"UPDATE audit_events SET {assignments} WHERE id = :row_id",  # noqa: S608
        row_id=row_id,
        **values,
    )


def renumber_from(engine: Engine, first: int) -> None:
    """Move rows ``first`` onward up by one id, last first, to open a gap at ``first``."""
    for row_id in range(ROWS, first - 1, -1):
        execute(
            engine, "UPDATE audit_events SET id = :new WHERE id = :old", new=row_id + 1, old=row_id
        )


def forged(row_id: int, prev_hash: str) -> AuditEvent:
    """A plausible event an intruder might slip in as row ``row_id``."""
    return AuditEvent(
        id=row_id,
        at=datetime.now(UTC),
        actor="cli:alice",
        actor_agency=None,
        action="token.create",
        target="token:99",
        subject_agency="acme",
        remote_addr=None,
        outcome="ok",
        detail=json.dumps({"role": "admin"}),
        prev_hash=prev_hash,
        hash="0" * 64,
    )


def insert(engine: Engine, event: AuditEvent) -> None:
    """Store ``event`` as it stands, bypassing the audit service."""
    with Session(engine) as session, session.begin():
        session.add(event)


def assert_broken_at(runner: CliRunner, row_id: int, problem: str) -> None:
    """``audit verify`` exits 3 and names ``row_id`` as the first wrong row."""
    result = runner.invoke(main, ["audit", "verify"])
    assert result.exit_code == EXIT_CHAIN_BROKEN, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"hashex-server: audit chain broken: audit row {row_id}: ")
    assert problem in result.stderr


# -- (a) edited rows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "cli:mallory"),
        ("actor_agency", "beta"),
        ("action", "group.create"),
        ("target", "token:2"),
        ("subject_agency", "beta"),
        ("remote_addr", "192.0.2.1"),
        ("outcome", "refused"),
        ("detail", '{"role":"admin"}'),
    ],
)
@pytest.mark.parametrize("row_id", [1, 3, ROWS])
def test_an_edited_field_is_caught_at_its_row(
    runner: CliRunner, engine: Engine, row_id: int, column: str, value: str
) -> None:
    assert raw_row(engine, row_id)[column] != value
    overwrite(engine, row_id, {column: value})
    assert_broken_at(runner, row_id, EDITED)


def test_an_edited_time_is_caught_at_its_row(runner: CliRunner, engine: Engine) -> None:
    moment = read(engine, 3).at - timedelta(microseconds=1)
    with engine.begin() as connection:
        connection.execute(update(AuditEvent).where(AuditEvent.id == 3).values(at=moment))
    assert_broken_at(runner, 3, EDITED)


def test_an_edited_hash_is_caught_at_its_row(runner: CliRunner, engine: Engine) -> None:
    overwrite(engine, 3, {"hash": "f" * 64})
    assert_broken_at(runner, 3, EDITED)


def test_an_edited_previous_hash_is_caught_at_its_row(runner: CliRunner, engine: Engine) -> None:
    overwrite(engine, 3, {"prev_hash": "f" * 64})
    assert_broken_at(runner, 3, UNCHAINED)


# -- (b) deleted rows -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("deleted", "named", "gap"),
    [
        ([3], 4, "rows 3 to 3 are missing (deleted)"),
        ([2, 3, 4], 5, "rows 2 to 4 are missing (deleted)"),
        ([1], 2, "rows 1 to 1 are missing (deleted)"),
    ],
)
def test_a_deleted_row_is_caught_naming_the_gap(
    runner: CliRunner, engine: Engine, deleted: list[int], named: int, gap: str
) -> None:
    for row_id in deleted:
        execute(engine, "DELETE FROM audit_events WHERE id = :id", id=row_id)
    assert_broken_at(runner, named, gap)


def test_a_deleted_row_closed_up_by_renumbering_is_caught(
    runner: CliRunner, engine: Engine
) -> None:
    execute(engine, "DELETE FROM audit_events WHERE id = 3")
    for row_id in range(4, ROWS + 1):
        execute(
            engine, "UPDATE audit_events SET id = :new WHERE id = :old", new=row_id - 1, old=row_id
        )
    assert_broken_at(runner, 3, UNCHAINED)


def test_cutting_the_tail_changes_the_head_that_verify_reports(
    runner: CliRunner, engine: Engine
) -> None:
    # The chain alone cannot tell a log cut short from a shorter log: what
    # shows the cut is the head that verify reported before it.
    head = read(engine, ROWS).hash
    execute(engine, "DELETE FROM audit_events WHERE id = :id", id=ROWS)
    after = runner.invoke(main, ["audit", "verify"])
    assert after.exit_code == 0
    assert after.stdout == f"{ROWS - 1}:{read(engine, 5).hash}\n"
    assert head not in after.stdout


def test_a_recorded_head_catches_rows_cut_from_the_end(runner: CliRunner, engine: Engine) -> None:
    recorded = runner.invoke(main, ["audit", "verify"]).stdout.strip()
    assert runner.invoke(main, ["audit", "verify", "--head", recorded]).exit_code == 0
    execute(engine, "DELETE FROM audit_events WHERE id = :id", id=ROWS)
    cut = runner.invoke(main, ["audit", "verify", "--head", recorded])
    assert cut.exit_code == 3
    assert f"audit row {ROWS}: missing" in cut.stderr


def test_a_recorded_head_catches_a_rewritten_tail(runner: CliRunner, engine: Engine) -> None:
    recorded = runner.invoke(main, ["audit", "verify"]).stdout.strip()
    event = read(engine, ROWS)
    event.actor = "cli:someone-else"
    execute(
        engine,
        "UPDATE audit_events SET actor = :actor, hash = :hash WHERE id = :id",
        actor=event.actor,
        hash=row_hash(event),
        id=ROWS,
    )
    rewritten = runner.invoke(main, ["audit", "verify", "--head", recorded])
    assert rewritten.exit_code == 3
    assert f"audit row {ROWS}: does not carry the head recorded earlier" in rewritten.stderr


@pytest.mark.parametrize(
    "head",
    [
        "abc",
        "",  # what HEAD=$(hashex-server audit verify) holds after a failed run
        f"{ROWS}:{'A' * 64}",
        f"\N{SUPERSCRIPT TWO}:{'a' * 64}",
        f" {ROWS}:{'a' * 64}",
        f"audit chain intact: {ROWS} rows, head {ROWS}:{'a' * 64}",
    ],
)
def test_a_malformed_head_is_a_usage_error(runner: CliRunner, head: str) -> None:
    result = runner.invoke(main, ["audit", "verify", "--head", head])
    assert result.exit_code == 2
    assert "ROWS:HASH" in result.stderr
    assert result.stdout == ""


# -- (c) inserted rows ----------------------------------------------------------------


def test_an_inserted_row_with_a_made_up_hash_is_caught_at_itself(
    runner: CliRunner, engine: Engine
) -> None:
    renumber_from(engine, 4)
    insert(engine, forged(4, prev_hash=read(engine, 3).hash))
    assert_broken_at(runner, 4, EDITED)


def test_an_inserted_row_with_a_correct_hash_is_caught_at_the_next_row(
    runner: CliRunner, engine: Engine
) -> None:
    renumber_from(engine, 4)
    event = forged(4, prev_hash=read(engine, 3).hash)
    event.hash = row_hash(event)
    insert(engine, event)
    # Row 4 is self-consistent; row 5 (the old row 4) still chains to row 3.
    assert_broken_at(runner, 5, UNCHAINED)


def test_an_inserted_row_that_does_not_chain_is_caught_at_itself(
    runner: CliRunner, engine: Engine
) -> None:
    renumber_from(engine, 4)
    event = forged(4, prev_hash="f" * 64)
    event.hash = row_hash(event)
    insert(engine, event)
    assert_broken_at(runner, 4, UNCHAINED)


# -- (d) an edited row with its own hash recomputed ---------------------------------------


def test_an_edited_row_with_a_recomputed_hash_is_caught_at_the_next_row(
    runner: CliRunner, engine: Engine
) -> None:
    overwrite(engine, 3, {"actor": "cli:mallory"})
    overwrite(engine, 3, {"hash": row_hash(read(engine, 3))})
    assert_broken_at(runner, 4, UNCHAINED)


# -- (e) swapped rows -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "problem"),
    [
        pytest.param(COLUMNS, UNCHAINED, id="whole-rows"),
        pytest.param(
            [c for c in COLUMNS if c not in ("prev_hash", "hash")], EDITED, id="contents-only"
        ),
    ],
)
def test_two_swapped_rows_are_caught_at_the_first(
    runner: CliRunner, engine: Engine, columns: list[str], problem: str
) -> None:
    second, third = raw_row(engine, 2), raw_row(engine, 3)
    overwrite(engine, 2, {name: third[name] for name in columns})
    overwrite(engine, 3, {name: second[name] for name in columns})
    assert_broken_at(runner, 2, problem)


def test_the_fixture_chain_is_the_one_described(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == [
        "agency.create",
        "agency.create",
        "token.create",
        "group.create",
        "group.add",
        "token.revoke",
    ]
