"""tenant_event: events told to a tenant's application, written with the effect they report

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 23:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_tenant_event_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_event")),
        sa.UniqueConstraint("tenant_id", "seq", name=op.f("uq_tenant_event_tenant_id_seq")),
    )
    op.create_index(
        op.f("ix_tenant_event_tenant_id"), "tenant_event", ["tenant_id"], unique=False
    )
    op.create_index(
        "ix_tenant_event_unnumbered",
        "tenant_event",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("seq IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_tenant_event_unnumbered",
        table_name="tenant_event",
        postgresql_where=sa.text("seq IS NULL"),
    )
    op.drop_index(op.f("ix_tenant_event_tenant_id"), table_name="tenant_event")
    op.drop_table("tenant_event")
