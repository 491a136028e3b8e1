"""push_lease: IMAP push listeners share accounts through per-account leases

`event.source` is a plain string column, so the new source "push" needs no type change.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_lease",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column(
            "expires_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "claimed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_push_lease_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_push_lease")),
    )
    op.create_index(op.f("ix_push_lease_holder"), "push_lease", ["holder"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_push_lease_holder"), table_name="push_lease")
    op.drop_table("push_lease")
