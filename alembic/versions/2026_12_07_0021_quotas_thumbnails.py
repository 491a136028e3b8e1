"""Quotas (a draft's size, indexes the storage quota sums by tenant)

Revision ID: 0021
Revises: 0016
Create Date: 2026-12-07 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0016"
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


def downgrade() -> None:
    op.drop_index("ix_outbound_attachment_tenant_size", table_name="outbound_attachment")
    op.drop_index("ix_send_draft_tenant_size", table_name="send_draft")
    op.drop_column("send_draft", "size")
