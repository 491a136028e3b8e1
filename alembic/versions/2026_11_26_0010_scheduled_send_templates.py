"""event.not_before for scheduled sends (`send_at`), and per-tenant mail templates

The event's `status` is a plain string column, so the new statuses `scheduled` and `cancelled`
need no schema change; the partial index serves beat's release of scheduled sends.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("event", sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_event_scheduled_not_before",
        "event",
        ["not_before"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.create_table(
        "template",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_template_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_template_tenant_id_name")),
    )
    op.create_index(
        "ix_template_tenant_created",
        "template",
        ["tenant_id", sa.text("created_at DESC"), sa.text("id DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_template_tenant_created", table_name="template")
    op.drop_table("template")
    op.drop_index(
        "ix_event_scheduled_not_before",
        table_name="event",
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_column("event", "not_before")
