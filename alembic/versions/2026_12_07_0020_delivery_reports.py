"""delivery reports: message.report, the per-recipient delivery_report links to sends, the
per-tenant suppression list, and send_draft.options (verp, unsubscribe, ignore_suppression)

Revision ID: 0020
Revises: 0021
Create Date: 2026-12-07 23:37:59.205126
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_report",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("outbound_id", sa.Uuid(), nullable=False),
        sa.Column("report_message_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["outbound_id"],
            ["outbound_message.id"],
            name=op.f("fk_delivery_report_outbound_id_outbound_message"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["report_message_id"],
            ["message.id"],
            name=op.f("fk_delivery_report_report_message_id_message"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_delivery_report_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_report")),
        sa.UniqueConstraint(
            "outbound_id",
            "report_message_id",
            "email",
            name=op.f("uq_delivery_report_outbound_id_report_message_id_email"),
        ),
    )
    op.create_index(
        "ix_delivery_report_report_message_id",
        "delivery_report",
        ["report_message_id"],
        unique=False,
    )
    op.create_table(
        "suppression",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("report_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["message.id"],
            name=op.f("fk_suppression_report_id_message"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_suppression_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "email", name=op.f("pk_suppression")),
    )
    op.create_index(
        "ix_suppression_tenant_created",
        "suppression",
        ["tenant_id", sa.text("created_at DESC"), sa.text("email DESC")],
        unique=False,
    )
    op.add_column(
        "message", sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_index(
        "ix_outbound_message_tenant_msgid",
        "outbound_message",
        ["tenant_id", "message_id_header"],
        unique=False,
    )
    op.add_column(
        "send_draft",
        sa.Column(
            "options", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("send_draft", "options")
    op.drop_index("ix_outbound_message_tenant_msgid", table_name="outbound_message")
    op.drop_column("message", "report")
    op.drop_index("ix_suppression_tenant_created", table_name="suppression")
    op.drop_table("suppression")
    op.drop_index("ix_delivery_report_report_message_id", table_name="delivery_report")
    op.drop_table("delivery_report")
