"""Quotas (a draft's size, indexes the storage quota sums by tenant); image thumbnails

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-07 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Drafts stored before this count as 0 bytes: they go with their event's retention.
    op.add_column(
        "send_draft", sa.Column("size", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_index("ix_send_draft_tenant_size", "send_draft", ["tenant_id", "size"])
    op.create_index(
        "ix_outbound_attachment_tenant_size", "outbound_attachment", ["tenant_id", "size"]
    )


    op.create_table(
        "attachment_thumbnail",
        sa.Column("attachment_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["attachment_id"],
            ["attachment.id"],
            name=op.f("fk_attachment_thumbnail_attachment_id_attachment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name=op.f("fk_attachment_thumbnail_message_id_message"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_attachment_thumbnail_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("attachment_id", name=op.f("pk_attachment_thumbnail")),
    )
    op.create_index(
        op.f("ix_attachment_thumbnail_message_id"), "attachment_thumbnail", ["message_id"]
    )
    op.create_index(
        "ix_attachment_image_created",
        "attachment",
        ["tenant_id", "created_at"],
        postgresql_where=sa.text(
            "content_type IN ('image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/heic')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_attachment_image_created", table_name="attachment")
    op.drop_index(op.f("ix_attachment_thumbnail_message_id"), table_name="attachment_thumbnail")
    op.drop_table("attachment_thumbnail")
    op.drop_index("ix_outbound_attachment_tenant_size", table_name="outbound_attachment")
    op.drop_index("ix_send_draft_tenant_size", table_name="send_draft")
    op.drop_column("send_draft", "size")
