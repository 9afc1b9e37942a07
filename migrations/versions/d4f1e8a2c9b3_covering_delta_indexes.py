"""Covering indexes for deltas: (set, added_in, line) and a partial (set, removed_in, line).

With (set, added_in) alone, SQLite answered "lines added in version n, in
order" by walking the primary key over every entry of the set, so applying a
1,000-entry delta cost time in proportion to the set.  With the line in the
index, each half of a delta is one ordered range.

Revision ID: d4f1e8a2c9b3
Revises: c7e9a3b5d201
Create Date: 2026-11-25 19:08:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4f1e8a2c9b3"
down_revision: str | Sequence[str] | None = "c7e9a3b5d201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Replace the two delta indexes with covering ones."""
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_set_added")
        batch_op.drop_index("ix_entries_set_removed")
        batch_op.create_index(
            "ix_entries_set_added_line", ["set_id", "added_in", "line"], unique=False
        )
        batch_op.create_index(
            "ix_entries_set_removed_line",
            ["set_id", "removed_in", "line"],
            unique=False,
            sqlite_where=sa.text("removed_in IS NOT NULL"),
            postgresql_where=sa.text("removed_in IS NOT NULL"),
        )


def downgrade() -> None:
    """Back to the narrow indexes."""
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_set_removed_line")
        batch_op.drop_index("ix_entries_set_added_line")
        batch_op.create_index("ix_entries_set_removed", ["set_id", "removed_in"], unique=False)
        batch_op.create_index("ix_entries_set_added", ["set_id", "added_in"], unique=False)
