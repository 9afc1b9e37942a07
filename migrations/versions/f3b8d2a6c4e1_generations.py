"""Generations: two numbers the database moves whenever listings or tokens change.

The poll (``GET /v1/sets``) is the hub's hottest path.  Each node keeps
every agency's rendered listing and every token it has checked in memory,
each tagged with the generation it was read at: a request reads the one
``generations`` row and, while its numbers stand, answers from memory
without querying tokens, sets, grants or keysets.

The numbers are moved by triggers, not by the services, so no change can
forget them: ``listings`` moves with any insert, update or delete of sets,
grants, group memberships or keysets; ``tokens`` with any change of a token
other than its last-used time (which a busy token writes once a minute),
and of agencies.  Each moves in the changing transaction itself, so no one
sees the change without the new number.  They are a row, not sequences: a
sequence moves before its transaction commits, and a listing read in
between would be remembered under the new number without the change.

Poll counts now go to the audit log in batches (``poll.count`` rows), so the
per-request ``poll_counts`` table goes.

SQLite drops a table's triggers when Alembic's batch mode rebuilds it: a
later revision that rebuilds one of these tables must create them again
(``create_triggers``).

Revision ID: f3b8d2a6c4e1
Revises: e5a7c3d9f1b2
Create Date: 2026-12-05 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3b8d2a6c4e1"
down_revision: str | Sequence[str] | None = "e5a7c3d9f1b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, the columns whose update matters or None for all, the number it moves)
WATCHED = (
    ("sets", None, "listings"),
    ("grants", None, "listings"),
    ("group_members", None, "listings"),
    ("keysets", None, "listings"),
    ("tokens", "agency_id, role, secret_sha256, expires_at, revoked_at", "tokens"),
    ("agencies", None, "tokens"),
)


def upgrade() -> None:
    """Create the generations row and its triggers; drop the per-request poll counts."""
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("listings", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_generations_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.execute("INSERT INTO generations (id, listings, tokens) VALUES (1, 1, 1)")
    create_triggers()
    op.drop_table("poll_counts")


def downgrade() -> None:
    """Bring back the poll counts table; drop the triggers and the generations."""
    op.create_table(
        "poll_counts",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_poll_counts_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(["set_id"], ["sets.id"], name=op.f("fk_poll_counts_set_id_sets")),
        sa.PrimaryKeyConstraint("set_id", "agency_id", "day", name=op.f("pk_poll_counts")),
    )
    drop_triggers()
    op.drop_table("generations")


def _bump(number: str) -> str:
    return f"UPDATE generations SET {number} = {number} + 1 WHERE id = 1"  # noqa: S608 - fixed names


def create_triggers() -> None:
    """The triggers that move a generation on every change of a watched table."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        for number in ("listings", "tokens"):
            op.execute(
                f"CREATE FUNCTION hashex_bump_{number}() RETURNS trigger "
                f"LANGUAGE plpgsql AS $$ BEGIN {_bump(number)}; RETURN NULL; END $$"
            )
    for table, columns, number in WATCHED:
        for event in ("insert", "update", "delete"):
            what = event.upper()
            if event == "update" and columns is not None:
                what += f" OF {columns}"
            name = f"{table}_{event}_bumps_{number}"
            if postgresql:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {what} ON {table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION hashex_bump_{number}()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {what} ON {table} BEGIN {_bump(number)}; END"
                )


def drop_triggers() -> None:
    """Drop what :func:`create_triggers` made."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, _columns, number in WATCHED:
        for event in ("insert", "update", "delete"):
            name = f"{table}_{event}_bumps_{number}"
            op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
    if postgresql:
        for number in ("listings", "tokens"):
            op.execute(f"DROP FUNCTION hashex_bump_{number}()")
