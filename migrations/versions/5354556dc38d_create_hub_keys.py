"""Create hub_keys: the transparency log's signing keys.

Revision ID: 5354556dc38d
Revises:
Create Date: 2026-11-25 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5354556dc38d"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the hub_keys table."""
    op.create_table(
        "hub_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("keyid", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(keyid) = 64", name=op.f("ck_hub_keys_keyid_length")),
        sa.CheckConstraint("length(public_key) = 32", name=op.f("ck_hub_keys_public_key_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_keys")),
        sa.UniqueConstraint("keyid", name=op.f("uq_hub_keys_keyid")),
    )


def downgrade() -> None:
    """Drop the hub_keys table."""
    op.drop_table("hub_keys")
