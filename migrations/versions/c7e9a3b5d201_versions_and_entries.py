"""Published versions, their entries, and counters of empty polls.

Entry lines collate as "C" on PostgreSQL so that the primary key orders them
bytewise, exactly as the content and delta digests need.

Revision ID: c7e9a3b5d201
Revises: b2c41f0a9d17
Create Date: 2026-11-25 17:19:13
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c7e9a3b5d201"
down_revision: str | Sequence[str] | None = "b2c41f0a9d17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create versions, entries and poll_counts."""
    op.create_table(
        "entries",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column(
            "line",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("added_in", sa.Integer(), nullable=False),
        sa.Column("removed_in", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "removed_in IS NULL OR removed_in > added_in", name=op.f("ck_entries_lifetime_order")
        ),
        sa.ForeignKeyConstraint(["set_id"], ["sets.id"], name=op.f("fk_entries_set_id_sets")),
        sa.PrimaryKeyConstraint("set_id", "line", "added_in", name=op.f("pk_entries")),
    )
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index("ix_entries_set_added", ["set_id", "added_in"], unique=False)
        batch_op.create_index("ix_entries_set_removed", ["set_id", "removed_in"], unique=False)

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
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("signatures", sa.Text(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("delta_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("adds", sa.Integer(), nullable=False),
        sa.Column("removes", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("keyset_version", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_versions_version_positive")),
        sa.ForeignKeyConstraint(["set_id"], ["sets.id"], name=op.f("fk_versions_set_id_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.UniqueConstraint("set_id", "version", name="uq_versions_set_version"),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("versions")
    op.drop_table("poll_counts")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_set_removed")
        batch_op.drop_index("ix_entries_set_added")

    op.drop_table("entries")
