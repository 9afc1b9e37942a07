"""Access control and audit: agencies, keysets, tokens, groups, sets, grants, audit.

Revision ID: b2c41f0a9d17
Revises: 5354556dc38d
Create Date: 2026-11-25 17:14:29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2c41f0a9d17"
down_revision: str | Sequence[str] | None = "5354556dc38d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables of identities, access control and the audit chain."""
    op.create_table(
        "agencies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agencies")),
        sa.UniqueConstraint("slug", name=op.f("uq_agencies_slug")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_agency", sa.String(length=63), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("subject_agency", sa.String(length=63), nullable=True),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('ok', 'refused')", name=op.f("ck_audit_events_outcome_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_actor_agency"), ["actor_agency"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_subject_agency"), ["subject_agency"], unique=False
        )

    op.create_table(
        "sharing_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sharing_groups")),
        sa.UniqueConstraint("slug", name=op.f("uq_sharing_groups_slug")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_group_members_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["sharing_groups.id"],
            name=op.f("fk_group_members_group_id_sharing_groups"),
        ),
        sa.PrimaryKeyConstraint("group_id", "agency_id", name=op.f("pk_group_members")),
    )
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_group_members_agency_id"), ["agency_id"], unique=False)

    op.create_table(
        "keysets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signatures", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_keysets_version_positive")),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_keysets_agency_id_agencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keysets")),
        sa.UniqueConstraint("agency_id", "version", name="uq_keysets_agency_version"),
    )
    with op.batch_alter_table("keysets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_keysets_agency_id"), ["agency_id"], unique=False)

    op.create_table(
        "sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("latest_version >= 0", name=op.f("ck_sets_latest_version_not_negative")),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_sets_agency_id_agencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sets")),
        sa.UniqueConstraint("agency_id", "slug", name="uq_sets_agency_slug"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'agency-admin', 'publisher', 'reader')",
            name=op.f("ck_tokens_role_known"),
        ),
        sa.CheckConstraint(
            "length(secret_sha256) = 64", name=op.f("ck_tokens_secret_sha256_length")
        ),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_tokens_agency_id_agencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_tokens_secret_sha256")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_agency_id"), ["agency_id"], unique=False)

    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(agency_id IS NULL) <> (group_id IS NULL)", name=op.f("ck_grants_one_reader_kind")
        ),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_grants_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["sharing_groups.id"], name=op.f("fk_grants_group_id_sharing_groups")
        ),
        sa.ForeignKeyConstraint(["set_id"], ["sets.id"], name=op.f("fk_grants_set_id_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint("set_id", "agency_id", name="uq_grants_set_agency"),
        sa.UniqueConstraint("set_id", "group_id", name="uq_grants_set_group"),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grants_agency_id"), ["agency_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_grants_group_id"), ["group_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_grants_set_id"), ["set_id"], unique=False)


def downgrade() -> None:
    """Drop them again, dependants first."""
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_set_id"))
        batch_op.drop_index(batch_op.f("ix_grants_group_id"))
        batch_op.drop_index(batch_op.f("ix_grants_agency_id"))

    op.drop_table("grants")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_agency_id"))

    op.drop_table("tokens")
    op.drop_table("sets")
    with op.batch_alter_table("keysets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keysets_agency_id"))

    op.drop_table("keysets")
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_members_agency_id"))

    op.drop_table("group_members")
    op.drop_table("sharing_groups")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_subject_agency"))
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_agency"))

    op.drop_table("audit_events")
    op.drop_table("agencies")
